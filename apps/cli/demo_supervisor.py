"""Keep the demo running when one of its agents stops: say so, and restart it on request.

The control plane shows a stopped agent offline (and raises an alert) within half a minute,
which is the story the demo is for; ``keyvault demo --restart-agent NAME`` (from another
terminal) asks the running demo to start it again. The request is a file named after the agent
in ``<folder>/restart/`` plus SIGUSR1 to the demo, whose pid is in ``<folder>/demo.pid``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from apps.cli.demo_stack import AGENTS, DemoError

if TYPE_CHECKING:
    from apps.cli.demo_stack import DemoStack

CHECK_SECONDS = 1.0


def pid_file(folder: Path) -> Path:
    """Where a running demo keeps its process id."""
    return folder / "demo.pid"


def request_restart(folder: Path, name: str) -> int:
    """Ask the demo running on ``folder`` to restart agent ``name``; returns the demo's pid."""
    if name not in AGENTS:
        raise DemoError(f"no demo agent {name!r}; the agents are {', '.join(AGENTS)}")
    try:
        pid = int(pid_file(folder).read_text(encoding="utf-8").strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        raise DemoError(
            f"no demo is running on {folder}; start it with `keyvault demo --dir {folder}`"
        ) from None
    requests = folder / "restart"
    requests.mkdir(exist_ok=True, mode=0o700)
    (requests / name).touch()
    os.kill(pid, signal.SIGUSR1)
    return pid


class Supervisor:
    """Watches the demo's children from a loop (``run``) that a restart request wakes up."""

    def __init__(self, stack: DemoStack, report: Callable[[str], None]) -> None:
        self.stack = stack
        self.report = report
        self.wake = threading.Event()
        self.stopped = threading.Event()
        self._reported: set[str] = set()

    def install(self) -> None:
        """Write the pid file and route SIGUSR1 to a wake-up (main thread only)."""
        pid_file(self.stack.folder).write_text(f"{os.getpid()}\n", encoding="utf-8")
        if hasattr(signal, "SIGUSR1"):
            signal.signal(signal.SIGUSR1, self._on_signal)

    def uninstall(self) -> None:
        """Stop the loop and remove the pid file."""
        self.stopped.set()
        self.wake.set()
        pid_file(self.stack.folder).unlink(missing_ok=True)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        del signum, frame
        self.wake.set()

    def run(self, *, stop_with_control_plane: bool) -> None:
        """Until stopped: report agents that stop, restart requested ones; a stopped control
        plane raises DemoError when ``stop_with_control_plane`` (nothing works without it)."""
        while not self.stopped.is_set():
            self.wake.wait(CHECK_SECONDS)
            self.wake.clear()
            self.check(stop_with_control_plane=stop_with_control_plane)

    def check(self, *, stop_with_control_plane: bool) -> None:
        """One pass: report, then serve restart requests."""
        for name, code in self.stack.stopped_children():
            if name == "control plane":
                if stop_with_control_plane:
                    self.stack.check_alive()
                continue
            agent = name.removeprefix("agent ")
            if agent not in self._reported:
                self._reported.add(agent)
                self.report(
                    f"agent {agent} stopped (status {code}); the control plane shows it offline "
                    f"within 30 s. Restart it with: keyvault demo --dir {self.stack.folder} "
                    f"--restart-agent {agent}"
                )
        self._serve_requests()

    def _serve_requests(self) -> None:
        requests = self.stack.folder / "restart"
        for request in sorted(requests.glob("*")) if requests.is_dir() else []:
            with contextlib.suppress(FileNotFoundError):
                request.unlink()
            name = request.name
            if name not in AGENTS:
                continue
            try:
                url = self.stack.restart_agent(name)
            except DemoError as exc:
                self.report(f"agent {name} could not be restarted: {exc.message}")
                continue
            self._reported.discard(name)
            self.report(f"agent {name} restarted on {url}")
