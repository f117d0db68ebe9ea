"""The systemd notification protocol (``sd_notify``), written out: one datagram per message.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
namespace) and, with ``WatchdogSec=``, ``$WATCHDOG_USEC``. A message is ``KEY=value`` lines in
one ``AF_UNIX`` datagram: ``READY=1`` once the API listens, ``STATUS=…`` for ``systemctl
status``, ``WATCHDOG=1`` at half the watchdog interval and ``STOPPING=1`` when shutdown begins.

The watchdog is petted by a task on the agent's event loop, so a loop that hangs (a blocking
call, a deadlock) stops petting and systemd restarts the agent. Without ``$NOTIFY_SOCKET``
(not under systemd, or on Windows) every call does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("keyvault.agent")
MAX_STATUS = 200  # characters of STATUS= (systemctl status shows one line)


class Notifier:
    """Sends notifications to the service manager named by ``$NOTIFY_SOCKET`` (if any)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_seconds = _watchdog_seconds(env)

    @property
    def enabled(self) -> bool:
        """True under a service manager that listens for notifications."""
        return self.address is not None

    def send(self, **fields: str) -> bool:
        """Send one message (``KEY=value`` lines); False when disabled or refused."""
        if self.address is None:
            return False
        text = "".join(f"{key}={_one_line(value)}\n" for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(text.encode(), self.address)
        except OSError as exc:  # a gone or full manager must not stop the agent
            log.debug("sd_notify to %r failed: %s", self.address, exc)
            return False
        return True

    def status(self, text: str) -> bool:
        """``STATUS=``: one line for ``systemctl status``."""
        return self.send(STATUS=text[:MAX_STATUS])

    def ready(self, status: str) -> bool:
        """``READY=1`` with a status line: the API listens."""
        return self.send(READY="1", STATUS=status[:MAX_STATUS])

    def stopping(self) -> bool:
        """``STOPPING=1``: shutdown has begun (in-flight requests are finishing)."""
        return self.send(STOPPING="1", STATUS="shutting down")

    async def pet_watchdog(self) -> None:
        """Send ``WATCHDOG=1`` every half interval until cancelled (no-op without a watchdog)."""
        if not self.enabled or self.watchdog_seconds is None:
            return
        interval = self.watchdog_seconds / 2
        while True:
            self.send(WATCHDOG="1")
            await asyncio.sleep(interval)

    def start_watchdog(self) -> asyncio.Task[None] | None:
        """Start :meth:`pet_watchdog` on the running loop when systemd asked for a watchdog."""
        if not self.enabled or self.watchdog_seconds is None:
            return None
        return asyncio.get_running_loop().create_task(self.pet_watchdog(), name="sd-watchdog")

    @staticmethod
    async def stop_watchdog(task: asyncio.Task[None] | None) -> None:
        """Cancel the watchdog task and wait for it."""
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _address(raw: str) -> str | bytes | None:
    if not raw or not hasattr(socket, "AF_UNIX"):
        return None
    if raw.startswith("@"):  # the abstract namespace
        return b"\0" + raw[1:].encode()
    if raw.startswith("/"):
        return raw
    return None  # vsock and other schemes are not used by our units


def _watchdog_seconds(env: Mapping[str, str]) -> float | None:
    """``$WATCHDOG_USEC`` in seconds, when it is meant for this process.

    ``$WATCHDOG_PID`` names the main process; the single binary's launcher is the main process
    and the agent its child, so the parent's pid counts too.
    """
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid not in {str(os.getpid()), str(os.getppid())}:
        return None
    return usec / 1_000_000 if usec > 0 else None


def _one_line(value: str) -> str:
    return value.replace("\n", " ").replace("\r", " ")
