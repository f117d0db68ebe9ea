"""Issue 15 on real processes: mutual TLS by default, files at rest, core dumps, a busy port,
``keyvault run``'s environment, a rekey that survives a restart, destroyed data really gone.

Every test runs ``keyvault`` as a user does (subprocesses, real TLS 1.3 sockets).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from common.client import AgentClient
from common.tls import client_context
from tests.conftest import AgentDir, AgentProcess, start_agent

CLI = [sys.executable, "-m", "apps.cli.main"]


def _env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KEYVAULT_", "VAULT_"))}
    base.update(extra)
    return base


def _kv(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        env=env or _env(),
        input=stdin,
        timeout=120,
        check=False,
    )


def _init(folder: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[AgentDir, str]:
    """``keyvault agent init`` as a user runs it; returns the folder and init's output."""
    token_file = folder.parent / f"{folder.name}.token"
    done = _kv("agent", "init", "--data-dir", str(folder), "--port", "0",
               "--token-file", str(token_file), *extra, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    return AgentDir(folder, token_file.read_text().strip()), done.stdout + done.stderr


def _probe_no_cert(url: str, ca: Path) -> bytes:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    ctx = client_context(ca)
    with socket.create_connection((host, int(port)), timeout=15) as raw:
        try:
            tls = ctx.wrap_socket(raw, server_hostname=host)
        except (ssl.SSLError, OSError) as exc:
            return f"refused: {exc!r}".encode()
        with tls:
            try:
                tls.sendall(f"GET /api/v1/health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                return tls.recv(200) or b"refused: closed"
            except (ssl.SSLError, OSError) as exc:
                return f"refused: {exc!r}".encode()


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """An environment whose per-user folders are temporary (the default master key goes there)."""
    cfg = tmp_path / "xdg-config"
    return _env(XDG_CONFIG_HOME=str(cfg), HOME=str(tmp_path / "home"))


def test_init_requires_client_certificates_and_puts_the_master_key_outside(
    tmp_path: Path, home: dict[str, str]
) -> None:
    folder, said = _init(tmp_path / "agent", env=home)
    config = yaml.safe_load((folder.path / "agent.yaml").read_text())
    assert config["tls"]["client_cert"] == "required"
    key = Path(config["master_key_file"])
    assert key.exists() and folder.path.resolve() not in key.resolve().parents
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert str(key) in said and "outside the data folder" in said
    assert not (folder.path / "master.key").exists()
    running = start_agent(folder, env=home)
    try:
        answer = _probe_no_cert(running.url, folder.tls / "ca.crt")
        assert answer.startswith(b"refused"), answer[:80]
        with running.client() as kv:  # ours presents its certificate
            kv.create("mtls/ok", "with a certificate")
        done = _kv("secrets", "get", "mtls/ok",
                   env={**home, "KEYVAULT_DATA_DIR": str(folder.path), "KEYVAULT_TOKEN": folder.token})  # fmt: skip
        assert done.returncode == 0 and "with a certificate" in done.stdout, done.stderr
    finally:
        running.stop()


def test_optional_client_certificates_are_an_explicit_logged_choice(
    tmp_path: Path, home: dict[str, str]
) -> None:
    folder, _ = _init(tmp_path / "agent", "--client-cert", "optional", env=home)
    running = start_agent(folder, env=home)
    try:
        with running.client(cert=False) as kv:
            kv.health()
    finally:
        running.stop()
    log = (folder.path / "agent.log").read_text()
    assert "client certificates are optional" in log


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_at_rest_are_0600_and_destroyed_data_is_gone(
    tmp_path: Path, home: dict[str, str]
) -> None:
    folder, _ = _init(tmp_path / "agent", env=home)
    running = start_agent(folder, env=home)
    try:
        with running.client() as kv:
            kv.create("keep/me", "kept-value-123")
            meta = kv.create("doomed/secret", "doomed-value-456")
            kv.update("doomed/secret", "doomed-value-789")
        db = sqlite3.connect(folder.path / "store.db")
        blobs = [
            bytes(b)
            for row in db.execute(
                "SELECT wrapped_dek, ciphertext FROM kv_versions WHERE secret_id = ?",
                (meta["id"],),
            )
            for b in row
        ]
        db.close()
        assert len(blobs) == 4
        for name in ("store.db", "store.db-wal", "store.db-shm"):
            path = folder.path / name
            if path.exists():
                assert _mode(path) == 0o600, (name, oct(_mode(path)))
        with running.client() as kv:
            kv.delete("doomed/secret")
            kv.destroy("doomed/secret")
        for path in folder.path.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                for blob in blobs:
                    assert blob[8:40] not in data, f"destroyed ciphertext left in {path.name}"
                if path.name.startswith("store.db"):
                    assert b"doomed/secret" not in data, f"destroyed name left in {path.name}"
        backup = tmp_path / "backup"
        done = _kv(
            "agent", "backup", "--data-dir", str(folder.path), "--out", str(backup), env=home
        )
        assert done.returncode == 0, done.stderr
        for path in backup.rglob("*"):
            assert _mode(path) == (0o700 if path.is_dir() else 0o600), path
    finally:
        running.stop()


def test_token_file_is_created_exclusively_and_never_through_a_link(
    tmp_path: Path, home: dict[str, str]
) -> None:
    existing = tmp_path / "admin.token"
    existing.write_text("")
    existing.chmod(0o644)
    done = _kv("agent", "init", "--data-dir", str(tmp_path / "a"), "--token-file", str(existing),
               env=home)  # fmt: skip
    assert done.returncode == 78 and "exists" in done.stderr, done.stderr
    assert existing.read_text() == "" and not (tmp_path / "a" / "agent.yaml").exists()
    target = tmp_path / "elsewhere"
    link = tmp_path / "link.token"
    link.symlink_to(target)
    done = _kv("agent", "init", "--data-dir", str(tmp_path / "b"), "--token-file", str(link),
               env=home)  # fmt: skip
    assert done.returncode == 78, done.stderr
    assert not target.exists()


def test_core_dumps_are_off(agent_process: AgentProcess) -> None:
    limits = Path(f"/proc/{agent_process.proc.pid}/limits").read_text()
    line = next(ln for ln in limits.splitlines() if ln.startswith("Max core file size"))
    assert line.split()[4:6] == ["0", "0"], line


def test_a_busy_port_is_one_line_and_exit_78(tmp_path: Path, home: dict[str, str]) -> None:
    folder, _ = _init(tmp_path / "agent", env=home)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _kv("agent", "run", "--data-dir", str(folder.path), "--port", str(port), env=home)
    assert done.returncode == 78, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: ") and str(port) in lines[-1], done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr


def test_keyvault_run_passes_only_what_the_child_asked_for(
    agent_process: AgentProcess, tmp_path: Path
) -> None:
    with agent_process.client() as kv:
        kv.create("run/db", "db-value")
    tls = agent_process.dir.tls
    env = _env(
        KEYVAULT_DATA_DIR=str(agent_process.dir.path),
        KEYVAULT_TOKEN=agent_process.dir.token,
        KEYVAULT_CLIENT_KEY=str(tls / "client.key"),
        KEYVAULT_CLIENT_CERT=str(tls / "client.crt"),
        KEYVAULT_CA_FILE=str(tls / "ca.crt"),
        UNRELATED_SETTING="kept",
    )
    done = _kv("run", "--secret", "DB=run/db", "--", "env", env=env)
    assert done.returncode == 0, done.stderr
    seen = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    assert seen["DB"] == "db-value" and seen["UNRELATED_SETTING"] == "kept"
    assert not [k for k in seen if k.startswith(("KEYVAULT_", "VAULT_"))], sorted(seen)


def test_rekey_to_a_passphrase_then_restart_works(tmp_path: Path, home: dict[str, str]) -> None:
    folder, _ = _init(tmp_path / "agent", env=home)
    running = start_agent(folder, env=home)
    phrase = "a long new passphrase for the vault"
    try:
        with running.client() as kv:
            kv.create("k/one", "value-one")
        env = {**home, "KEYVAULT_DATA_DIR": str(folder.path), "KEYVAULT_TOKEN": folder.token,
               "KEYVAULT_NEW_MASTER_PASSPHRASE": phrase}  # fmt: skip
        done = _kv("agent", "rekey", "--new-passphrase", "--iterations", "100000", env=env)
        assert done.returncode == 0, done.stderr
    finally:
        assert running.stop() == 0
    config = yaml.safe_load((folder.path / "agent.yaml").read_text())
    assert "master_key_file" not in config, config
    again = start_agent(folder, env={**home, "KEYVAULT_MASTER_PASSPHRASE": phrase})
    try:
        with again.client() as kv:
            assert kv.get("k/one")["value"] == "value-one"
    finally:
        again.stop()


def test_slow_headers_are_cut_off(agent_process: AgentProcess) -> None:
    host, port = agent_process.url.removeprefix("https://").rsplit(":", 1)
    tls = agent_process.dir.tls
    ctx = client_context(tls / "ca.crt", cert_file=tls / "client.crt", key_file=tls / "client.key")
    with socket.create_connection((host, int(port)), timeout=60) as raw:
        s = ctx.wrap_socket(raw, server_hostname=host)
        s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        try:
            while s.recv(100):
                pass
        except (ssl.SSLError, OSError):
            pass
        assert time.monotonic() - started < 15  # the head limit is 10 s


def test_client_of_ours_without_a_certificate_is_refused(
    tmp_path: Path, home: dict[str, str]
) -> None:
    folder, _ = _init(tmp_path / "agent", env=home)
    running = start_agent(folder, env=home)
    try:
        with AgentClient(running.url, folder.token, ca_file=folder.tls / "ca.crt") as kv:
            from common.errors import UnavailableError

            with pytest.raises(UnavailableError, match="requires a client certificate"):
                kv.health()
    finally:
        running.stop()
