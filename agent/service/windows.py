"""The agent as a Windows service (pywin32, imported only on Windows and only when used).

The service control manager starts ``<program> … windows-service host --data-dir DIR``; that
process hosts :func:`service_class` and runs the agent on the service thread. A stop request
(``SvcStop``) or the system shutting down (``SvcShutdown``) arrives on another thread and
reaches the agent's event loop through :class:`StopBridge`, so the agent shuts down exactly as
on SIGTERM, within the same budget: in-flight requests finish, the store closes. Nothing on that
path imports the systemd module (which is POSIX-only).

The service runs as its virtual account ``NT SERVICE\\KeyVaultAgent`` (no password, no rights
beyond what is granted to it), and ``install`` gives the data folder a protected ACL: full
control for SYSTEM, that account and Administrators, nobody else, nothing inherited from above.
Logs go to the Windows Event Log (source ``KeyVaultAgent``), which Windows sizes and rotates.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from agent import CONFIG_NAME, platform
from agent.service import is_frozen
from common.errors import ConfigError, KeyVaultError

SERVICE_NAME = "KeyVaultAgent"
SERVICE_ACCOUNT = f"NT SERVICE\\{SERVICE_NAME}"  # the service's virtual account
DISPLAY_NAME = "KeyVault agent"
DESCRIPTION = "Stores, serves, rotates and audits secrets on this host (KeyVault vault agent)."
NOT_WINDOWS = (
    "Windows services exist only on Windows; on Linux use `keyvault agent install-service`"
)


class NotWindowsError(KeyVaultError):
    """A Windows-service command was run on another system."""

    code = "unsupported_platform"
    exit_code = 2


def is_windows() -> bool:
    """True on Windows."""
    return platform.WINDOWS


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``%ProgramData%\\KeyVault``: the machine-wide data folder of a service agent."""
    env = os.environ if environ is None else environ
    return Path(env.get("PROGRAMDATA", r"C:\ProgramData")) / "KeyVault"


def config_path(data_dir: Path) -> Path:
    """The data folder's ``agent.yaml``, which a service needs to exist before it starts."""
    path = data_dir / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(
            f"{data_dir} holds no agent ({CONFIG_NAME} is missing): "
            f"run `keyvault agent init --data-dir {data_dir}` first"
        )
    return path


def host_command(
    data_dir: Path, *, frozen: bool | None = None, executable: str | None = None
) -> tuple[str, list[str]]:
    """The program and arguments the service manager starts to host the service."""
    program = str(executable or sys.executable)
    folder = str(data_dir)
    if is_frozen() if frozen is None else frozen:
        return program, ["windows-service", "host", "--data-dir", folder]
    return program, ["-m", "agent.service.windows", "--data-dir", folder]


class StopBridge:
    """Lets another thread (the service manager's) stop the agent's event loop gracefully."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._target: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self._requested = False

    def attach(self, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
        """Called on the loop: stop requests now set ``stop``; an early request applies at once."""
        with self._lock:
            self._target = (loop, stop)
            if self._requested:
                loop.call_soon_threadsafe(stop.set)

    def request_stop(self) -> None:
        """Ask for a graceful stop, from any thread, before or after the agent started."""
        with self._lock:
            self._requested = True
            if self._target is not None:
                loop, stop = self._target
                if not loop.is_closed():
                    loop.call_soon_threadsafe(stop.set)

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for."""
        return self._requested


def run_agent(data_dir: Path, bridge: StopBridge) -> None:
    """Serve the agent on this thread until the bridge asks it to stop (the service's body)."""
    from agent.serve import serve
    from agent.settings import load_agent_settings
    from common.eventloop import run_event_loop

    config = config_path(data_dir)
    settings = load_agent_settings(config, data_dir)

    async def main() -> None:
        stop = asyncio.Event()
        bridge.attach(asyncio.get_running_loop(), stop)
        await serve(settings, stop=stop)

    run_event_loop(main())


def stop_wait_hint_ms(data_dir: Path) -> int:
    """How long the service manager should wait for a stop: the agent's shutdown budget."""
    from agent.service import stop_timeout
    from agent.settings import load_agent_settings

    settings = load_agent_settings(None, data_dir)
    return stop_timeout(settings.shutdown_timeout) * 1000


def _win32() -> dict[str, ModuleType]:
    """pywin32's modules, or a one-line error off Windows or without pywin32."""
    if not is_windows():
        raise NotWindowsError(NOT_WINDOWS)
    try:
        import ntsecuritycon
        import pywintypes
        import servicemanager
        import win32security
        import win32service
        import win32serviceutil
    except ImportError:
        raise ConfigError(
            "pywin32 is missing: pip install 'keyvault[agent]' (it brings pywin32 on Windows)"
        ) from None
    return {
        "ntsecuritycon": ntsecuritycon,
        "win32security": win32security,
        "pywintypes": pywintypes,
        "servicemanager": servicemanager,
        "win32service": win32service,
        "win32serviceutil": win32serviceutil,
    }


@functools.cache
def service_class(data_dir: Path) -> type:
    """The ``ServiceFramework`` subclass for ``data_dir`` (built on first use: needs pywin32)."""
    mods = _win32()
    framework: Any = mods["win32serviceutil"].ServiceFramework
    win32service = mods["win32service"]

    class KeyVaultAgentService(framework):
        _svc_name_ = SERVICE_NAME
        _svc_display_name_ = DISPLAY_NAME
        _svc_description_ = DESCRIPTION

        def __init__(self, args: Any) -> None:
            super().__init__(args)
            self.bridge = StopBridge()

        def GetAcceptedControls(self) -> int:
            # stop, and a shutdown notice so the store closes before Windows goes down
            return int(win32service.SERVICE_ACCEPT_STOP | win32service.SERVICE_ACCEPT_SHUTDOWN)

        def SvcStop(self) -> None:
            hint = stop_wait_hint_ms(data_dir)
            self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=hint)
            self.bridge.request_stop()

        def SvcShutdown(self) -> None:
            # the same graceful stop, within the same budget (shutdown_timeout + margin)
            self.SvcStop()

        def SvcDoRun(self) -> None:
            self.ReportServiceStatus(win32service.SERVICE_RUNNING)
            run_agent(data_dir, self.bridge)

    return KeyVaultAgentService


class EventLogHandler(logging.Handler):
    """Writes log records to the Windows Event Log through ``servicemanager`` (scrubbed)."""

    def __init__(self, servicemanager: Any) -> None:
        super().__init__()
        self._sm = servicemanager
        from agent.logs import ScrubbingFilter, ScrubbingFormatter

        self.addFilter(ScrubbingFilter())
        self.setFormatter(ScrubbingFormatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        """Error and above as errors, warnings as warnings, the rest as information."""
        try:
            text = self.format(record)
            if record.levelno >= logging.ERROR:
                self._sm.LogErrorMsg(text)
            elif record.levelno >= logging.WARNING:
                self._sm.LogWarningMsg(text)
            else:
                self._sm.LogInfoMsg(text)
        except Exception:  # a full or unavailable log must not stop the agent
            self.handleError(record)


def log_to_event_log(servicemanager: Any, level: str = "INFO") -> EventLogHandler:
    """Send the agent's logging to the Event Log instead of stderr (a service has no console)."""
    handler = EventLogHandler(servicemanager)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return handler


def host(data_dir: Path) -> None:
    """Entry point of the process the service manager starts: log to the Event Log, dispatch."""
    mods = _win32()
    servicemanager = mods["servicemanager"]
    if sys.stderr is None:  # a service has no console: nothing may write to a missing stream
        sys.stderr = open(os.devnull, "w", encoding="utf-8")
    log_to_event_log(servicemanager)
    servicemanager.Initialize()
    servicemanager.PrepareToHostSingle(service_class(data_dir))
    servicemanager.StartServiceCtrlDispatcher()


def _call(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run one pywin32 call; its ``pywintypes.error`` becomes a one-line KeyVaultError."""
    error = _win32()["pywintypes"].error
    try:
        return fn(*args, **kwargs)
    except error as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise KeyVaultError(
            f"could not {what} the {SERVICE_NAME} service: {reason} (run as Administrator?)"
        ) from None


def failure_actions_command(name: str = SERVICE_NAME) -> list[str]:
    """``sc.exe failure``: restart the service 5 s after it fails (reset after a day)."""
    return ["sc.exe", "failure", name, "reset=", "86400", "actions=", "restart/5000"]


def install(data_dir: Path, *, run: Callable[..., Any] = subprocess.run) -> str:
    """Register the service and lock down its files; returns its name.

    Automatic (delayed) start, restart on failure, run as the virtual account
    ``NT SERVICE\\KeyVaultAgent``; then the data folder (and the master key file, when it lives
    elsewhere) get a protected ACL: SYSTEM, that account and Administrators, nobody else.
    """
    mods = _win32()
    data = data_dir.resolve()
    config_path(data)
    program, args = host_command(data)
    util, svc = mods["win32serviceutil"], mods["win32service"]
    _call(
        "install",
        util.InstallService,
        None,
        SERVICE_NAME,
        DISPLAY_NAME,
        startType=svc.SERVICE_AUTO_START,
        exeName=program,
        exeArgs=subprocess.list2cmdline(args),
        description=DESCRIPTION,
        delayedstart=True,
        userName=SERVICE_ACCOUNT,  # a virtual account: Windows manages it, no password
        password=None,
    )
    run(failure_actions_command(), check=False, capture_output=True)
    accounts = platform.folder_acl_accounts(SERVICE_ACCOUNT)
    try:
        for path in protected_paths(data):
            _call("protect the files of", platform.restrict_acl, path, accounts)
    except KeyVaultError:
        # a service whose files are not private must not stay registered: undo, then report
        _call("remove", util.RemoveService, SERVICE_NAME)
        raise
    return SERVICE_NAME


def protected_paths(data: Path) -> list[Path]:
    """The data folder, and the master key file named in its config when it is outside it."""
    from agent.settings import load_agent_settings

    paths = [data]
    key = load_agent_settings(None, data).master_key_file
    if key is not None and key.is_file() and not key.resolve().is_relative_to(data):
        paths.append(key.resolve())
    return paths


def remove() -> None:
    """Unregister the service (stop it first)."""
    _call("remove", _win32()["win32serviceutil"].RemoveService, SERVICE_NAME)


def start(wait_seconds: int = 30) -> None:
    """Start the service and wait until it runs."""
    mods = _win32()
    util = mods["win32serviceutil"]
    _call("start", util.StartService, SERVICE_NAME)
    running = mods["win32service"].SERVICE_RUNNING
    _call("start", util.WaitForServiceStatus, SERVICE_NAME, running, wait_seconds)


def stop(wait_seconds: int = 30) -> None:
    """Ask the service to stop (a graceful shutdown) and wait until it has."""
    mods = _win32()
    util = mods["win32serviceutil"]
    _call("stop", util.StopService, SERVICE_NAME)
    stopped = mods["win32service"].SERVICE_STOPPED
    _call("stop", util.WaitForServiceStatus, SERVICE_NAME, stopped, wait_seconds)


def main(argv: list[str] | None = None) -> None:
    """``python -m agent.service.windows --data-dir DIR``: host the service (not frozen)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "--data-dir":
        raise SystemExit("usage: python -m agent.service.windows --data-dir DIR")
    try:
        host(Path(args[1]))
    except KeyVaultError as exc:
        raise SystemExit(f"error: {exc.message}") from None


if __name__ == "__main__":
    main()
