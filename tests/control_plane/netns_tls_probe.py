"""Run inside a private network namespace (see test_api_tls.py): a real control plane bound to
10.99.0.1, which is not a loopback address, and every client against it.

Prints one JSON object of observations on stdout; the test asserts on them.
``python tests/control_plane/netns_tls_probe.py DATA_DIR``
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ADDRESS = "10.99.0.1"
EMAIL = "owner@netns.test"
PASSWORD = "correct horse battery staple"
CLI = [sys.executable, "-m", "apps.cli.main"]


def env(data: Path, **extra: str) -> dict[str, str]:
    """The control plane's and the CLI's environment (embedded mode, fast argon2)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("KEYVAULT_")}
    return {
        **base,
        "KEYVAULT_CP_DATABASE_URL": f"sqlite+aiosqlite:///{data / 'cp.db'}",
        "KEYVAULT_CP_CA_KEY_PASSPHRASE": "netns-test-passphrase",
        "KEYVAULT_CP_ARGON2_TIME_COST": "1",
        "KEYVAULT_CP_ARGON2_MEMORY_KIB": "64",
        "KEYVAULT_CP_BACKGROUND_TASKS": "false",
        "XDG_CONFIG_HOME": str(data / "operator"),
        "PYTHON_KEYRING_BACKEND": "apps.core.keyring_store.MemoryKeyring",
        **extra,
    }


def cli(data: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """``keyvault ARGS`` as a real process."""
    return subprocess.run(
        [*CLI, *args], env=env(data, **extra), capture_output=True, text=True, timeout=120
    )


def start(data: Path, *args: str) -> tuple[subprocess.Popen[str], dict[str, Any] | None, str]:
    """``control-plane run`` on 10.99.0.1: (process, ready document or None, its output)."""
    ready = data / f"ready-{time.monotonic_ns()}.json"
    log = data / f"cp-{time.monotonic_ns()}.log"
    run = ["control-plane", "run", "--bind", ADDRESS, "--port", "0", "--gateway-port", "0"]
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*CLI, *run, *args, "--ready-file", str(ready)],
            env=env(data, KEYVAULT_CP_GATEWAY_BIND=ADDRESS),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and not ready.exists():
        time.sleep(0.05)
    doc = json.loads(ready.read_text()) if ready.exists() else None
    return proc, doc, log.read_text()


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM and wait."""
    if proc.poll() is None:
        proc.terminate()
        proc.wait(20)


def tls_version(url: str, ca_file: Path) -> str | None:
    """The TLS version a verifying client negotiates with the API."""
    host, port = url.removeprefix("https://").rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            return tls.version()


def python_clients(url: str, http_url: str, ca_file: Path, pin: str) -> dict[str, Any]:
    """The library and the login view model (what the TUI and the desktop app call)."""
    from apps.core.keyring_store import CredentialStore
    from apps.core.viewmodels.login import LoginViewModel
    from common.cpclient import AsyncControlPlaneClient, ControlPlaneClient
    from common.errors import KeyVaultError

    out: dict[str, Any] = {}
    for name, make in (
        ("sync_http", lambda: ControlPlaneClient(http_url)),
        ("async_http", lambda: AsyncControlPlaneClient(http_url)),
    ):
        try:
            make()
            out[name] = "accepted"
        except KeyVaultError as exc:
            out[name] = exc.message
    with ControlPlaneClient(url, ca_file=ca_file) as cp:
        out["sync_https_login"] = bool(cp.login(EMAIL, PASSWORD)["token"])
    with ControlPlaneClient(url, pin=pin) as cp:
        out["pin_login"] = bool(cp.login(EMAIL, PASSWORD)["token"])
    try:
        with ControlPlaneClient(url, pin="sha256:" + "0" * 64) as cp:
            cp.login(EMAIL, PASSWORD)
        out["wrong_pin"] = "accepted"
    except KeyVaultError as exc:
        out["wrong_pin"] = exc.message

    async def view_model() -> None:
        vm = LoginViewModel()
        store = CredentialStore.memory()
        try:
            await vm.login(http_url, EMAIL, PASSWORD, store=store)
            out["vm_http"] = "accepted"
        except KeyVaultError as exc:
            out["vm_http"] = [exc.message, (exc.details or {}).get("field")]
        session = await vm.login(url, EMAIL, PASSWORD, str(ca_file), store=store)
        out["vm_https_role"] = session.profile.role
        session = await vm.login(url, EMAIL, PASSWORD, pin, store=store)
        out["vm_pin_role"] = session.profile.role

    asyncio.run(view_model())
    return out


def container(data: Path) -> dict[str, Any]:
    """The image's entrypoint bound off loopback: it issues the API a certificate on its first
    start, serves TLS, and its health check passes."""
    app = data / "app"
    app.mkdir()
    ready = app / "ready.json"
    cenv = env(
        data,
        KEYVAULT_APP_DIR=str(app),
        KEYVAULT_CP_DATABASE_URL=f"sqlite+aiosqlite:///{app / 'cp.db'}",
        KEYVAULT_CP_BIND=ADDRESS,
        KEYVAULT_CP_GATEWAY_BIND=ADDRESS,
        KEYVAULT_CP_PORT="0",
        KEYVAULT_CP_GATEWAY_PORT="0",
        KEYVAULT_CP_READY_FILE=str(ready),
        KEYVAULT_CP_API_NAMES=ADDRESS,
    )
    entry = [sys.executable, "-m", "control_plane.container"]
    with (app / "cp.log").open("w") as out:
        proc = subprocess.Popen(entry, env=cenv, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and not ready.exists():
            time.sleep(0.05)
        doc = json.loads(ready.read_text()) if ready.exists() else {}
        health = subprocess.run(
            [*entry, "health"], env=cenv, capture_output=True, text=True, timeout=60
        )
        url = str(doc.get("api_url"))
        version = tls_version(url, app / "tls" / "ca.crt") if url.startswith("https") else None
    finally:
        proc.terminate()
        proc.wait(20)
    return {
        "container_url": url,
        "container_tls": version,
        "container_health": [health.returncode, health.stdout + health.stderr],
        "container_key_mode": oct((app / "tls" / "api.key").stat().st_mode & 0o777),
    }


def main(data: Path) -> dict[str, Any]:
    """Every observation, as one dictionary."""
    out: dict[str, Any] = {}
    tls_dir = data / "tls"
    init = cli(
        data,
        *("control-plane", "init", "--org", "NetNS", "--email", EMAIL),
        *("--tls-dir", str(tls_dir), "--api-name", ADDRESS),
        KEYVAULT_CP_OWNER_PASSWORD=PASSWORD,
    )
    out["init"] = [init.returncode, init.stdout + init.stderr]
    pin = next(w for w in init.stdout.split() if w.startswith("sha256:"))
    plain, doc, log = start(data)
    out["plain_start"] = [plain.wait(30), doc, log]
    proxied, doc, log = start(data, "--tls-proxy")
    out["proxy_start"] = [doc, log]
    stop(proxied)
    cert, key, ca = tls_dir / "api.crt", tls_dir / "api.key", tls_dir / "ca.crt"
    server, doc, log = start(data, "--tls-cert-file", str(cert), "--tls-key-file", str(key))
    try:
        assert doc is not None, log
        url = str(doc["api_url"])
        http_url = url.replace("https://", "http://")
        out["api_url"] = url
        out["tls_version"] = tls_version(url, ca)
        bad = cli(data, "login", "--control-plane", http_url, "--email", EMAIL)
        out["cli_http"] = [bad.returncode, bad.stderr]
        unverified = cli(
            data, "login", "--control-plane", url, "--email", EMAIL, KEYVAULT_PASSWORD=PASSWORD
        )
        out["cli_no_ca"] = [unverified.returncode, unverified.stderr]
        good = cli(
            data,
            *("login", "--control-plane", url, "--email", EMAIL, "--ca-file", str(ca)),
            KEYVAULT_PASSWORD=PASSWORD,
        )
        out["cli_ca"] = [good.returncode, good.stdout + good.stderr]
        pinned = cli(
            data,
            *("login", "--control-plane", url, "--email", EMAIL, "--ca-pin", pin),
            KEYVAULT_PASSWORD=PASSWORD,
        )
        out["cli_pin"] = [pinned.returncode, pinned.stdout + pinned.stderr]
        out.update(python_clients(url, http_url, ca, pin))
    finally:
        stop(server)
    out.update(container(data))
    return out


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
