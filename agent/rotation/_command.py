"""The ``command`` rotator: run a configured program with the new value on standard input.

The environment is exactly ``PATH``, ``LANG``, ``KEYVAULT_SECRET_ID`` and
``KEYVAULT_SECRET_VERSION``; the value is never in argv or the environment. The program runs
in its own process group, killed whole at the timeout. Its output is discarded unread except
for counting stderr bytes (it may echo the value): only that count is logged.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from typing import IO, Any

from agent import platform
from agent.rotation._base import (
    COMMAND_FAILED,
    COMMAND_NOT_CONFIGURED,
    COMMAND_TIMEOUT,
    RotationError,
    SecretRef,
)
from agent.rotation._random import GENERATOR_KEYS, Generator, reject_unknown
from agent.settings import CommandHook

log = logging.getLogger("keyvault.agent.rotation")
KEYS = GENERATOR_KEYS | {"command"}


class CommandRotator:
    """Hands a new random value to an external program; exit status 0 means it took it."""

    def __init__(
        self, settings: dict[str, Any], hook: CommandHook, name: str, secret: SecretRef
    ) -> None:
        reject_unknown(settings, KEYS)
        self.generator = Generator.parse({k: v for k, v in settings.items() if k != "command"})
        self.hook = hook
        self.name = name
        self.secret = secret

    def __repr__(self) -> str:
        return f"CommandRotator(command={self.name!r}, secret={self.secret.id!r})"

    def generate(self, current: str | None) -> str:
        """A fresh random value (the rotator's generator settings)."""
        return self.generator.new_value()

    def apply(self, new: str, current: str | None) -> None:
        """Run the program with the new value (version ``current + 1``)."""
        self._run(new, self.secret.version + 1)

    def verify(self, new: str) -> None:
        """The program's exit status 0 in :meth:`apply` is the proof."""

    def revert(self, current: str | None, new: str) -> None:
        """Best effort: run the program again with the current value, when there is one."""
        if current is not None:
            self._run(current, self.secret.version)

    def _run(self, value: str, version: int) -> None:
        env = {
            "PATH": os.environ.get("PATH") or os.defpath,
            "LANG": os.environ.get("LANG") or "C.UTF-8",
            "KEYVAULT_SECRET_ID": self.secret.id,
            "KEYVAULT_SECRET_VERSION": str(version),
        }
        try:
            proc = subprocess.Popen(
                self.hook.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env,
                cwd="/",
                close_fds=True,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise RotationError(
                COMMAND_NOT_CONFIGURED, f"the program of command {self.name!r} does not exist"
            ) from None
        except OSError as exc:
            raise RotationError(
                COMMAND_FAILED, f"command {self.name!r} cannot start (errno {exc.errno})"
            ) from None
        assert proc.stdin is not None and proc.stderr is not None
        stderr_bytes = [0]
        feeder = threading.Thread(target=_feed, args=(proc.stdin, value.encode()), daemon=True)
        drainer = threading.Thread(target=_drain, args=(proc.stderr, stderr_bytes), daemon=True)
        feeder.start()
        drainer.start()
        timed_out = False
        try:
            status = proc.wait(self.hook.timeout_seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc.pid)
            status = proc.wait()
        feeder.join(1)
        drainer.join(1)
        log.info(
            "rotation command %s for secret %s: %s, %d bytes of stderr withheld",
            self.name,
            self.secret.id,
            "timed out" if timed_out else f"exit status {status}",
            stderr_bytes[0],
        )
        if timed_out:
            raise RotationError(COMMAND_TIMEOUT, f"command {self.name!r} timed out")
        if status != 0:
            raise RotationError(COMMAND_FAILED, f"command {self.name!r} exit status {status}")


def _feed(stdin: IO[bytes], data: bytes) -> None:
    """Write the value to the program and close its input (it may exit without reading)."""
    try:
        stdin.write(data)
    except OSError:
        pass
    finally:
        try:
            stdin.close()
        except OSError:
            pass


def _drain(stderr: IO[bytes], count: list[int]) -> None:
    """Read and discard stderr, counting its bytes."""
    try:
        while chunk := stderr.read1(65536):  # type: ignore[attr-defined]
            count[0] += len(chunk)
    except (OSError, ValueError):
        pass
    finally:
        try:
            stderr.close()
        except OSError:
            pass


_kill_group = platform.kill_group
