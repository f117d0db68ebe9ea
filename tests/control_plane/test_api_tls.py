"""TLS on the operator API: the server refuses plain HTTP off loopback, every client refuses
``http://`` to anything but loopback, and TLS 1.3 login works with the CA file or a pin.

The end-to-end test runs a real control plane bound to 10.99.0.1 inside a network namespace of
its own (``unshare -n``), where that address is not loopback.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from common import errors as e
from common.cpclient import AsyncControlPlaneClient, ControlPlaneClient, check_url
from control_plane.api_tls import api_ssl_context, is_loopback_bind
from control_plane.settings import ControlPlaneSettings
from tests.conftest import need_service

ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("netns_tls_probe.py")


@pytest.mark.parametrize(
    "url",
    ["http://10.99.0.1:8443", "http://cp.example.com", "http://[2001:db8::1]:80", "http://0.0.0.0"],
)
def test_clients_refuse_plain_http_off_loopback(url: str) -> None:
    for make in (ControlPlaneClient, AsyncControlPlaneClient):
        with pytest.raises(e.ValidationError) as info:
            make(url)
        message = info.value.message
        assert "refusing" in message and "https://" in message and "\n" not in message


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8443", "http://localhost:1", "http://[::1]:8443", "http://127.8.9.1"]
)
def test_clients_allow_plain_http_to_loopback(url: str) -> None:
    assert check_url(url) == url


def test_pin_and_ca_file_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(e.ValidationError):
        ControlPlaneClient("https://cp.test", ca_file=tmp_path / "ca.crt", pin="sha256:" + "a" * 64)
    with pytest.raises(e.ValidationError):
        ControlPlaneClient("https://cp.test", pin="sha256:nothex")


def _settings(tmp_path: Path, **extra: object) -> ControlPlaneSettings:
    return ControlPlaneSettings.model_validate(
        {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'cp.db'}", **extra}
    )


def test_server_refuses_plain_http_off_loopback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for bind in ("10.99.0.1", "0.0.0.0", "", "cp.example.com", "::"):
        assert not is_loopback_bind(bind)
        with pytest.raises(e.ConfigError) as info:
            api_ssl_context(_settings(tmp_path, bind=bind))
        assert "tls_cert_file" in info.value.message and "tls_proxy" in info.value.message
    assert api_ssl_context(_settings(tmp_path, bind="127.0.0.1")) is None
    with caplog.at_level(logging.WARNING, "keyvault.control_plane.api"):
        assert api_ssl_context(_settings(tmp_path, bind="0.0.0.0", tls_proxy=True)) is None
    assert "tls_proxy" in caplog.text and "plain HTTP" in caplog.text


def test_cert_and_key_go_together(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="together"):
        _settings(tmp_path, tls_cert_file=tmp_path / "a.crt")


def _namespace_available() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip is not installed"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"unshare -n fails: {probe.stderr.strip()}"


@pytest.fixture(scope="module")
def netns(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Observations of netns_tls_probe.py run in a fresh network namespace."""
    why = _namespace_available()
    if why is not None:
        need_service("a private network namespace", RuntimeError(why))
    data = tmp_path_factory.mktemp("netns")
    script = (
        "ip link set lo up && ip addr add 10.99.0.1/32 dev lo && "
        f'exec "{sys.executable}" "{PROBE}" "{data}"'
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    doc: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return doc


def test_netns_server_refuses_plain_http(netns: dict[str, Any]) -> None:
    code, ready, log = netns["plain_start"]
    assert code != 0 and ready is None
    assert "refusing to serve the operator API in plain HTTP on 10.99.0.1" in log
    ready, log = netns["proxy_start"]
    assert ready is not None and ready["api_url"].startswith("http://10.99.0.1:")
    assert "because tls_proxy is set" in log


def test_netns_tls13_login_with_ca_file_and_pin(netns: dict[str, Any]) -> None:
    assert netns["init"][0] == 0, netns["init"]
    assert str(netns["api_url"]).startswith("https://10.99.0.1:")
    assert netns["tls_version"] == "TLSv1.3"
    code, out = netns["cli_ca"]
    assert code == 0 and "logged in to https://10.99.0.1" in out, out
    code, out = netns["cli_pin"]
    assert code == 0 and "logged in" in out, out
    assert netns["sync_https_login"] is True and netns["pin_login"] is True
    assert netns["vm_https_role"] == "owner" and netns["vm_pin_role"] == "owner"


def test_netns_every_client_refuses_plain_http(netns: dict[str, Any]) -> None:
    code, err = netns["cli_http"]
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: refusing http://10.99")
    for name in ("sync_http", "async_http"):
        assert str(netns[name]).startswith("refusing http://10.99.0.1"), netns[name]
    message, field = netns["vm_http"]
    assert message.startswith("refusing http://10.99.0.1") and field == "url"


def test_netns_unverified_or_wrong_pin_is_refused(netns: dict[str, Any]) -> None:
    code, err = netns["cli_no_ca"]
    assert code != 0 and "--ca-file" in err, err
    assert "does not match the pin" in str(netns["wrong_pin"]), netns["wrong_pin"]


async def test_live_stream_refuses_plain_ws_off_loopback() -> None:
    from apps.core.stream import LiveStream

    statuses: list[bool] = []
    stream = LiveStream("http://10.99.0.1:8443", "kvs_token", on_status=statuses.append)
    await stream.run()  # returns at once: it never dials
    assert stream.connections == 0 and statuses == [False]
    assert str(stream.last_error).startswith("refusing http://10.99.0.1:8443")


def test_netns_container_issues_its_certificate_and_serves_tls(netns: dict[str, Any]) -> None:
    assert str(netns["container_url"]).startswith("https://10.99.0.1:")
    assert netns["container_tls"] == "TLSv1.3"
    assert netns["container_health"][0] == 0, netns["container_health"]
    assert netns["container_key_mode"] == "0o600"
