"""``keyvault run --watch``: keep a child process in step with the secrets it was given.

A thread follows the agent's change stream (``GET /api/v1/changes``, only the names given);
the main thread owns the child. On a change (or a ``resync``, or after the stream is back from
an outage) it re-reads every secret and, if any version moved, either restarts the child
(SIGTERM, up to ``grace`` seconds, SIGKILL, then the new child at once) or sends it a signal.
A signalled child keeps its old environment (a process cannot change another's); it rereads
the values from ``--env-file``, rewritten atomically with mode 0600 before the signal.
The child's own exit ends ``keyvault run`` with its status; SIGTERM/SIGINT to us are passed on.
"""

from __future__ import annotations

import os
import queue
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.platform import make_private_fd
from common.client import AgentClient, ClientConfig
from common.errors import KeyVaultError, ValidationError

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
RECHECK = "recheck"  # queue marker: re-read every secret (reconnected, or told to resync)


@dataclass(frozen=True)
class WatchOptions:
    """What to do on a change."""

    on_change: str  # "restart" or "signal"
    sig: int = 0  # the signal number in "signal" mode
    grace: float = 10.0
    env_file: Path | None = None


def parse_on_change(text: str) -> tuple[str, int]:
    """``restart`` or ``signal:<SIG>`` (name with or without SIG, or a number)."""
    if text == "restart":
        return "restart", 0
    kind, sep, name = text.partition(":")
    if kind != "signal" or not sep or not name:
        raise ValidationError("--on-change must be 'restart' or 'signal:<SIG>', e.g. signal:HUP")
    if name.isdigit():
        number = int(name)
        if number not in {s.value for s in signal.Signals}:
            raise ValidationError(f"--on-change: {number} is not a signal number on this system")
        return "signal", number
    upper = name.upper()
    upper = upper if upper.startswith("SIG") else "SIG" + upper
    try:
        return "signal", signal.Signals[upper].value
    except KeyError:
        raise ValidationError(f"--on-change: unknown signal {name!r}; e.g. HUP, USR1") from None


def write_env_file(path: Path, values: Mapping[str, str]) -> None:
    """Replace ``path`` atomically (a reader sees the old file or the new, never half) with
    mode 0600: one ``NAME=value`` line per secret, the value quoted as for a POSIX shell."""
    text = "".join(f"{k}={shlex.quote(v)}\n" for k, v in sorted(values.items()))
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    try:
        make_private_fd(fd)  # mkstemp makes it 0600; this holds under any umask quirk
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Watcher:
    """Runs the child and follows the change stream for its secrets."""

    def __init__(
        self,
        cfg: ClientConfig,
        mappings: Sequence[tuple[str, str]],
        command: Sequence[str],
        base_env: Mapping[str, str],
        options: WatchOptions,
        *,
        say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    ) -> None:
        self.cfg = cfg
        self.mappings = list(mappings)
        self.command = list(command)
        self.base_env = dict(base_env)
        self.options = options
        self.say = say
        self.events: queue.Queue[str] = queue.Queue()
        self.stop = threading.Event()
        self.child: subprocess.Popen[bytes] | None = None
        self.versions: dict[str, tuple[str, int]] = {}
        self.values: dict[str, str] = {}

    def _client(self) -> AgentClient:
        c = self.cfg
        return AgentClient(
            c.url, c.token, ca_file=c.ca_file, cert_file=c.cert_file, key_file=c.key_file
        )

    def fetch(self) -> bool:
        """Read every secret; True when a version changed since the last read."""
        values: dict[str, str] = {}
        versions: dict[str, tuple[str, int]] = {}
        with self._client() as kv:
            for var, name in self.mappings:
                doc = kv.get(name)
                values[var] = doc["value"]
                versions[name] = (doc["id"], doc["version"])
        changed = versions != self.versions
        self.values, self.versions = values, versions
        if changed and self.options.env_file is not None:
            write_env_file(self.options.env_file, values)
        return changed

    def _start(self) -> None:
        try:
            self.child = subprocess.Popen(self.command, env={**self.base_env, **self.values})
        except OSError as exc:
            raise ValidationError(f"cannot run {self.command[0]!r}: {exc.strerror}") from None

    def _stop_child(self) -> int:
        child = self.child
        assert child is not None
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(self.options.grace)
            except subprocess.TimeoutExpired:
                child.kill()
        return child.wait()

    def _follow(self) -> None:
        """The stream thread: queue a marker per relevant change; reconnect with backoff, and
        once back, queue a full re-check (the agent subscribes before it answers, so nothing
        after the re-check is missed)."""
        names = [name for _, name in self.mappings]
        failures = 0

        def opened() -> None:
            nonlocal failures
            if failures:
                failures = 0
                self.events.put(RECHECK)

        while not self.stop.is_set():
            try:
                with self._client() as kv:
                    for change in kv.changes(names, on_open=opened):
                        if change.get("event") == "resync" or change.get("name") in names:
                            self.events.put(str(change.get("event")))
                        if self.stop.is_set():
                            return
            except KeyVaultError as exc:
                if self.stop.is_set():
                    return
                self.say(f"keyvault run: change stream lost ({exc.message}); reconnecting")
            failures += 1
            delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** min(failures, 10))
            self.stop.wait(random.uniform(delay / 2, delay))

    def _apply(self) -> None:
        try:
            if not self.fetch():
                return
        except KeyVaultError as exc:
            self.say(
                f"keyvault run: could not re-read the secrets ({exc.message}); keeping the child"
            )
            return
        if self.options.on_change == "restart":
            self.say("keyvault run: a secret changed; restarting the child")
            self._stop_child()
            self._start()
        else:
            assert self.child is not None
            self.say(
                f"keyvault run: a secret changed; sending {signal.Signals(self.options.sig).name}"
            )
            self.child.send_signal(self.options.sig)

    def run(self) -> int:
        """Start the child and keep it in step until it exits; its exit status (128 + N when
        signal N ended it, as a shell reports it)."""
        code = self._run()
        return 128 - code if code < 0 else code

    def _run(self) -> int:
        self.fetch()
        self._start()
        passed: list[int] = []

        def pass_on(signum: int, _frame: Any) -> None:
            passed.append(signum)

        old = {s: signal.signal(s, pass_on) for s in (signal.SIGTERM, signal.SIGINT)}
        follower = threading.Thread(target=self._follow, name="keyvault-watch", daemon=True)
        follower.start()
        try:
            while True:
                assert self.child is not None
                if passed:
                    self.child.send_signal(passed.pop())
                    try:
                        return self.child.wait(self.options.grace)
                    except subprocess.TimeoutExpired:
                        return self._stop_child()
                code = self.child.poll()
                if code is not None:
                    return code
                try:
                    self.events.get(timeout=0.1)
                except queue.Empty:
                    continue
                while not self.events.empty():  # one re-read for a burst of changes
                    self.events.get_nowait()
                self._apply()
        finally:
            self.stop.set()
            for s, handler in old.items():
                signal.signal(s, handler)
            if self.child is not None and self.child.poll() is None:
                self._stop_child()
