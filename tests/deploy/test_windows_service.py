"""Windows service support, checked on Linux: the pure logic, and pywin32 calls via stub modules."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from click.testing import CliRunner

from agent.cli import agent_group
from agent.service import windows
from common.client import AgentClient
from common.errors import ConfigError, KeyVaultError
from tests.conftest import AgentDir, init_agent_dir

pytestmark = pytest.mark.windows


def test_the_module_imports_no_pywin32_off_windows() -> None:
    code = (
        "import sys, agent.service.windows, agent.cli\n"
        "print([m for m in sys.modules if m.startswith(('win32', 'pywintypes', 'servicemanager'))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("action", ["install", "remove", "start", "stop"])
def test_commands_off_windows_are_one_line_and_exit_2(action: str) -> None:
    out = CliRunner().invoke(agent_group, ["windows-service", action])
    assert out.exit_code == 2
    assert out.output == f"error: {windows.NOT_WINDOWS}\n"


def test_host_command_for_python_and_for_the_binary(tmp_path: Path) -> None:
    data = tmp_path / "data dir"
    assert windows.host_command(data, frozen=False, executable=r"C:\Py\python.exe") == (
        r"C:\Py\python.exe",
        ["-m", "agent.service.windows", "--data-dir", str(data)],
    )
    assert windows.host_command(data, frozen=True, executable=r"C:\kv\keyvault-agent.exe") == (
        r"C:\kv\keyvault-agent.exe",
        ["windows-service", "host", "--data-dir", str(data)],
    )


def test_default_data_dir_and_config_resolution(tmp_path: Path) -> None:
    assert windows.default_data_dir({"PROGRAMDATA": "/pd"}) == Path("/pd/KeyVault")
    assert windows.default_data_dir({}) == Path(r"C:\ProgramData") / "KeyVault"
    with pytest.raises(ConfigError, match="keyvault agent init --data-dir"):
        windows.config_path(tmp_path)
    agent = init_agent_dir(tmp_path / "agent")
    assert windows.config_path(agent.path) == agent.path / "agent.yaml"
    assert windows.stop_wait_hint_ms(agent.path) == 20_000  # shutdown_timeout 10 s + 10 s


def test_failure_actions_restart_the_service() -> None:
    assert windows.failure_actions_command() == [
        "sc.exe",
        "failure",
        "KeyVaultAgent",
        "reset=",
        "86400",
        "actions=",
        "restart/5000",
    ]


# ------------------------------------------------------------------ pywin32 stubs


class _Win32Error(Exception):
    def __init__(self, winerror: int, funcname: str, strerror: str) -> None:
        super().__init__(winerror, funcname, strerror)
        self.winerror, self.funcname, self.strerror = winerror, funcname, strerror


class _Framework:
    def __init__(self, args: Any) -> None:
        self.args = args
        self.reported: list[tuple[int, int]] = []

    def ReportServiceStatus(self, status: int, waitHint: int = 0) -> None:
        self.reported.append((status, waitHint))


@pytest.fixture
def win32(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.SimpleNamespace]:
    """Stub pywin32 modules in sys.modules, and a Windows platform for the module."""
    svc = types.ModuleType("win32service")
    for name, value in {
        "SERVICE_AUTO_START": 2,
        "SERVICE_STOPPED": 1,
        "SERVICE_STOP_PENDING": 3,
        "SERVICE_RUNNING": 4,
        "SERVICE_ACCEPT_STOP": 1,
        "SERVICE_ACCEPT_SHUTDOWN": 4,
    }.items():
        setattr(svc, name, value)
    util = types.ModuleType("win32serviceutil")
    util.ServiceFramework = _Framework  # type: ignore[attr-defined]
    for fn in ("InstallService", "RemoveService", "StartService", "StopService"):
        setattr(util, fn, mock.Mock(name=fn))
    util.WaitForServiceStatus = mock.Mock(name="WaitForServiceStatus")  # type: ignore[attr-defined]
    pyt = types.ModuleType("pywintypes")
    pyt.error = _Win32Error  # type: ignore[attr-defined]
    manager = types.ModuleType("servicemanager")
    for fn in (
        "LogInfoMsg",
        "LogWarningMsg",
        "LogErrorMsg",
        "Initialize",
        "PrepareToHostSingle",
        "StartServiceCtrlDispatcher",
    ):
        setattr(manager, fn, mock.Mock(name=fn))
    sec = types.ModuleType("win32security")
    sec.ACL_REVISION_DS = 4  # type: ignore[attr-defined]
    sec.SE_FILE_OBJECT = 1  # type: ignore[attr-defined]
    sec.DACL_SECURITY_INFORMATION = 0x4  # type: ignore[attr-defined]
    sec.PROTECTED_DACL_SECURITY_INFORMATION = 0x80000000  # type: ignore[attr-defined]
    sec.acls = []  # type: ignore[attr-defined]

    def new_acl() -> mock.Mock:
        acl = mock.Mock(name="ACL")
        sec.acls.append(acl)  # type: ignore[attr-defined]
        return acl

    sec.ACL = new_acl  # type: ignore[attr-defined]
    sec.LookupAccountName = mock.Mock(  # type: ignore[attr-defined]
        name="LookupAccountName", side_effect=lambda _sys, name: (f"SID({name})", "", 1)
    )
    sec.SetNamedSecurityInfo = mock.Mock(name="SetNamedSecurityInfo")  # type: ignore[attr-defined]
    ntsc = types.ModuleType("ntsecuritycon")
    ntsc.OBJECT_INHERIT_ACE, ntsc.CONTAINER_INHERIT_ACE = 1, 2  # type: ignore[attr-defined]
    ntsc.FILE_ALL_ACCESS = 0x1F01FF  # type: ignore[attr-defined]
    for name, module in (
        ("win32service", svc),
        ("win32serviceutil", util),
        ("pywintypes", pyt),
        ("servicemanager", manager),
        ("win32security", sec),
        ("ntsecuritycon", ntsc),
    ):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(windows, "is_windows", lambda: True)
    windows.service_class.cache_clear()
    yield types.SimpleNamespace(util=util, svc=svc, manager=manager, sec=sec)
    windows.service_class.cache_clear()


def test_install_registers_the_host_command(win32: Any, tmp_path: Path) -> None:
    agent = init_agent_dir(tmp_path / "data dir")
    runner = mock.Mock()
    assert windows.install(agent.path, run=runner) == "KeyVaultAgent"
    data = str(agent.path.resolve())
    win32.util.InstallService.assert_called_once_with(
        None,
        "KeyVaultAgent",
        "KeyVault agent",
        startType=2,
        exeName=sys.executable,
        exeArgs=f'-m agent.service.windows --data-dir "{data}"',
        description=windows.DESCRIPTION,
        delayedstart=True,
        userName="NT SERVICE\\KeyVaultAgent",
        password=None,
    )
    runner.assert_called_once_with(
        windows.failure_actions_command(), check=False, capture_output=True
    )


def _acl_of(win32: Any, call: Any) -> list[tuple[int, int, int, str]]:
    _path, kind, info, owner, group, dacl, sacl = call.args
    assert (kind, owner, group, sacl) == (1, None, None, None)
    assert info == 0x4 | 0x80000000  # the DACL, protected: nothing inherited from above
    return [c.args for c in dacl.AddAccessAllowedAceEx.call_args_list]


def test_install_gives_the_data_folder_a_private_protected_acl(win32: Any, tmp_path: Path) -> None:
    agent = init_agent_dir(tmp_path / "data")  # its master key lies inside the folder
    windows.install(agent.path, run=mock.Mock())
    [call] = win32.sec.SetNamedSecurityInfo.call_args_list
    assert call.args[0] == str(agent.path.resolve())
    full, inherit = 0x1F01FF, 1 | 2  # FILE_ALL_ACCESS, for files and folders inside
    assert _acl_of(win32, call) == [
        (4, inherit, full, "SID(NT AUTHORITY\\SYSTEM)"),
        (4, inherit, full, "SID(NT SERVICE\\KeyVaultAgent)"),
        (4, inherit, full, "SID(BUILTIN\\Administrators)"),
    ]


def test_install_also_locks_a_master_key_kept_outside_the_folder(
    win32: Any, tmp_path: Path
) -> None:
    from agent.provision import InitOptions, initialise

    data, key = tmp_path / "data", tmp_path / "keys" / "master.key"
    key.parent.mkdir()
    initialise(InitOptions(data, key_file=key))
    windows.install(data, run=mock.Mock())
    paths = [c.args[0] for c in win32.sec.SetNamedSecurityInfo.call_args_list]
    assert paths == [str(data.resolve()), str(key.resolve())]


def test_a_failed_acl_is_one_line_naming_the_service(win32: Any, tmp_path: Path) -> None:
    agent = init_agent_dir(tmp_path / "data")
    win32.sec.SetNamedSecurityInfo.side_effect = _Win32Error(5, "SetNamedSecurityInfo", "Denied.")
    with pytest.raises(KeyVaultError, match="could not protect the files of the KeyVaultAgent"):
        windows.install(agent.path, run=mock.Mock())
    win32.util.RemoveService.assert_called_once_with("KeyVaultAgent")  # not left half-installed


def test_install_refuses_an_uninitialised_folder(win32: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        windows.install(tmp_path, run=mock.Mock())
    win32.util.InstallService.assert_not_called()


def test_remove_start_stop_call_the_service_manager(win32: Any) -> None:
    windows.remove()
    win32.util.RemoveService.assert_called_once_with("KeyVaultAgent")
    windows.start(wait_seconds=7)
    win32.util.StartService.assert_called_once_with("KeyVaultAgent")
    win32.util.WaitForServiceStatus.assert_called_with("KeyVaultAgent", 4, 7)
    windows.stop()
    win32.util.StopService.assert_called_once_with("KeyVaultAgent")
    win32.util.WaitForServiceStatus.assert_called_with("KeyVaultAgent", 1, 30)


def test_a_service_manager_error_is_one_line(win32: Any) -> None:
    win32.util.StopService.side_effect = _Win32Error(5, "OpenService", "Access is denied.")
    with pytest.raises(KeyVaultError) as caught:
        windows.stop()
    assert caught.value.message == (
        "could not stop the KeyVaultAgent service: Access is denied. (run as Administrator?)"
    )


def test_service_stop_reports_pending_and_asks_the_agent_to_stop(
    win32: Any, agent_dir: AgentDir
) -> None:
    cls = windows.service_class(agent_dir.path)
    assert issubclass(cls, _Framework) and cls._svc_name_ == "KeyVaultAgent"
    service = cls(["KeyVaultAgent"])
    service.SvcStop()
    assert service.reported == [(3, 20_000)]
    assert service.bridge.requested


def test_system_shutdown_stops_the_agent_like_a_stop(win32: Any, agent_dir: AgentDir) -> None:
    service = windows.service_class(agent_dir.path)(["KeyVaultAgent"])
    assert service.GetAcceptedControls() == 1 | 4  # stop and shutdown
    service.SvcShutdown()
    assert service.reported == [(3, 20_000)]  # the same bounded budget as a stop
    assert service.bridge.requested


def test_logs_go_to_the_event_log_by_level_and_scrubbed(win32: Any) -> None:
    import logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        windows.log_to_event_log(win32.manager)
        log = logging.getLogger("keyvault.agent")
        log.info("agent serving on %s", "https://127.0.0.1:8080")
        log.warning("client certificates are optional")
        log.error("refused token kvt_abcdefghijklmnop")
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    win32.manager.LogInfoMsg.assert_called_once_with(
        "keyvault.agent: agent serving on https://127.0.0.1:8080"
    )
    win32.manager.LogWarningMsg.assert_called_once_with(
        "keyvault.agent: client certificates are optional"
    )
    win32.manager.LogErrorMsg.assert_called_once_with("keyvault.agent: refused token kvt_***")


def test_host_logs_to_the_event_log_and_dispatches(
    win32: Any, agent_dir: AgentDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    monkeypatch.setattr(sys, "stderr", None)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        windows.host(agent_dir.path)
        assert [type(h) for h in root.handlers] == [windows.EventLogHandler]
        assert sys.stderr is not None  # stray writes go nowhere instead of failing
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    win32.manager.Initialize.assert_called_once_with()
    win32.manager.PrepareToHostSingle.assert_called_once_with(windows.service_class(agent_dir.path))
    win32.manager.StartServiceCtrlDispatcher.assert_called_once_with()
    assert not (agent_dir.path / "agent.log").exists()  # no unrotated log file any more


def test_the_stop_path_never_imports_the_systemd_module(agent_dir: AgentDir) -> None:
    """SvcStop's budget is computed without agent.service.systemd (POSIX-only), even under the
    simulated Windows of tests/winsim (no pwd, no fcntl)."""
    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys\nfrom pathlib import Path\nimport agent.service.windows as w\n"
        f"print(w.stop_wait_hint_ms(Path({str(agent_dir.path)!r})))\n"
        "print('agent.service.systemd' in sys.modules, 'pwd' in sys.modules)\n"
    )
    env = dict(os.environ)
    if sys.platform != "win32":  # on Windows itself, no simulation is needed
        env["PYTHONPATH"] = os.pathsep.join([str(root / "tests" / "winsim"), str(root)])
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["20000", "False", "False"]


# ------------------------------------------------------------------ the stop bridge, for real


def _stop_when_healthy(agent: AgentDir, bridge: windows.StopBridge, seen: list[str]) -> None:
    url_file = agent.path / "agent.url"
    deadline = time.monotonic() + 30
    while not url_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    tls = agent.tls
    with AgentClient(
        url_file.read_text().strip(),
        agent.token,
        ca_file=tls / "ca.crt",
        cert_file=tls / "client.crt",
        key_file=tls / "client.key",
    ) as kv:
        seen.append(kv.health()["status"])
    bridge.request_stop()  # from this thread, as the service manager's SvcStop does


def test_a_stop_from_another_thread_shuts_the_agent_down_gracefully(agent_dir: AgentDir) -> None:
    bridge, seen = windows.StopBridge(), []
    helper = threading.Thread(target=_stop_when_healthy, args=(agent_dir, bridge, seen))
    helper.start()
    began = time.monotonic()
    windows.run_agent(agent_dir.path, bridge)  # returns only after the graceful shutdown
    helper.join(5)
    assert seen == ["healthy"]
    assert not (agent_dir.path / "agent.url").exists()  # removed at the end of shutdown
    assert time.monotonic() - began < 30


def test_a_stop_requested_before_start_applies_at_once(agent_dir: AgentDir) -> None:
    bridge = windows.StopBridge()
    bridge.request_stop()
    windows.run_agent(agent_dir.path, bridge)
    assert not (agent_dir.path / "agent.url").exists()
