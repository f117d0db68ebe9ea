"""The demo stack: a control plane and two agents as child processes in one data folder.

The first run creates everything (owner account, metadata key, enrolled agents, sample secrets,
a rotation policy); later runs on the same folder reuse it all and only log in again.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from common.errors import ConfigError, KeyVaultError

if TYPE_CHECKING:
    from apps.core.keyring_store import CredentialStore
    from apps.core.session import Session
    from common.client import AgentClient
    from common.cpclient import ControlPlaneClient

T = TypeVar("T")
OWNER_EMAIL = "demo@keyvault.local"
ORG_NAME = "KeyVault demo"
AGENTS = ("payments-prod", "web-staging")
DEFAULT_PORT_BASE = 8400
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
CLI = (sys.executable, "-m", "apps.cli.main")
# (agent, secret name, labels); values are generated demo strings, never real-looking credentials
SAMPLES: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("payments-prod", "payments/api-key", {"env": "prod", "team": "payments"}),
    ("payments-prod", "payments/db-password", {"env": "prod", "team": "payments"}),
    ("payments-prod", "payments/webhook-secret", {"env": "prod", "team": "payments"}),
    ("payments-prod", "shared/smtp-password", {"env": "prod", "team": "platform"}),
    ("web-staging", "web/api-key", {"env": "staging", "team": "web"}),
    ("web-staging", "web/session-secret", {"env": "staging", "team": "web"}),
    ("web-staging", "web/db-password", {"env": "staging", "team": "web"}),
    ("web-staging", "shared/feature-flags-token", {"env": "staging", "team": "platform"}),
)
POLICY = {
    "name": "rotate API keys monthly",
    "selector": {"name_glob": "*/api-key"},
    "interval_seconds": 30 * 86400,
    "notice_seconds": 7 * 86400,
    "rotator": {"type": "random", "settings": {}},
    "scope": {"all": True},
}


class DemoError(KeyVaultError):
    """The demo could not start."""

    code = "demo_failed"
    exit_code = 1


@dataclass
class Child:
    """One child process and its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    offset: int  # where this run's part of the log starts

    def tail(self, lines: int = 15) -> str:
        """The last lines this run wrote to its log."""
        try:
            with self.log.open("rb") as fh:
                fh.seek(self.offset)
                text = fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, wait up to 10 s, then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def write_private(path: Path, text: str) -> None:
    """Write a file readable only by its owner (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text + "\n")


def read_ready(path: Path) -> str | None:
    """The stripped text of a file a child writes once it listens, or None (not yet)."""
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def check_port_free(port: int) -> None:
    """ConfigError when something already listens on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise ConfigError(
                f"port {port} is in use; pass --port-base N or stop the other program"
            ) from None


def child_env(**extra: str) -> dict[str, str]:
    """This environment without the user's KEYVAULT_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYVAULT_")}
    return {**env, **extra}


class DemoStack:
    """Start (and later stop) the demo's processes; ``session`` is the logged-in operator."""

    def __init__(self, folder: Path, port_base: int | None = None) -> None:
        self.folder = folder.resolve()
        self.cp_dir = self.folder / "control-plane"
        self.password_file = self.folder / "owner.password"  # the owner's generated password
        self.key_file = self.folder / "metadata.key"  # the agents' copy of the metadata key
        self.state_file = self.folder / "demo.json"
        self.state: dict[str, Any] = self._load_state()
        self.port_base = self._choose_port_base(port_base)
        self.children: list[Child] = []
        self.api_url = self.gateway_url = self.password = ""
        self.agent_urls: dict[str, str] = {}
        self.memory_keyring = False
        self.failed_log = ""  # the last lines of a child's log when it died starting
        self._store: CredentialStore | None = None
        self._session: Session | None = None

    def agent_dir(self, name: str) -> Path:
        """One agent's data folder."""
        return self.folder / "agents" / name

    @property
    def session(self) -> Session:
        """The operator's session (after ``start``)."""
        if self._session is None:
            raise DemoError("the demo stack is not started")
        return self._session

    def _load_state(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"{self.state_file} cannot be read ({exc}); delete the folder"
            ) from None
        return doc if isinstance(doc, dict) else {}

    def _save_state(self) -> None:
        self.state_file.write_text(json.dumps(self.state, indent=2) + "\n", encoding="utf-8")

    def _choose_port_base(self, asked: int | None) -> int:
        saved = self.state.get("port_base")
        if isinstance(saved, int) and asked is not None and asked != saved:
            raise ConfigError(
                f"the demo in {self.folder} uses --port-base {saved} (its agents are enrolled "
                "there); run it without --port-base, or use another --dir"
            )
        return int(saved if isinstance(saved, int) else asked or DEFAULT_PORT_BASE)

    def ports(self) -> dict[str, int]:
        """API, gateway and one port per agent, from the port base."""
        names = ("api", "gateway", *AGENTS)
        return {name: self.port_base + i for i, name in enumerate(names)}

    # ------------------------------------------------------------ start and stop
    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        """Print ``what… ok (1.2 s)`` around a piece of start-up."""
        started = time.monotonic()
        click.echo(f"{what}… ", nl=False)
        try:
            yield
        except BaseException:
            click.echo("failed")
            if self.failed_log:
                click.echo(self.failed_log, err=True)
            raise
        click.echo(f"ok ({time.monotonic() - started:.1f} s)")

    def start(self) -> None:
        """Start the control plane and both agents; set everything up on the first run."""
        first = not self.state.get("ready")
        for port in self.ports().values():
            check_port_free(port)
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        click.echo(f"demo data folder: {self.folder} ({'new' if first else 'reusing it'})")
        self.state["port_base"] = self.port_base
        self._save_state()
        os.environ["XDG_CONFIG_HOME"] = str(self.folder / "operator")
        self._store = self._credential_store()
        self._start_control_plane()
        with self.step("logging in as " + OWNER_EMAIL):
            self._login()
            self._metadata_key()
        self._start_agents()
        with self.step(
            "writing sample secrets and a rotation policy" if first else "reading sample secrets"
        ):
            self._seed()
            self._save_agent_connections()
        with self.step("waiting for both vaults to be online"):
            self._wait_online()
        self.state["ready"] = True
        self._save_state()

    def check_alive(self) -> None:
        """DemoError naming the first child that has stopped on its own."""
        for child in self.children:
            if child.proc.poll() is not None:
                raise DemoError(
                    f"the {child.name} stopped unexpectedly (status {child.proc.returncode}); "
                    f"its log is {child.log}"
                )

    def stopped_children(self) -> list[tuple[str, int]]:
        """(name, exit status) of every child that has stopped on its own."""
        return [
            (child.name, int(child.proc.returncode))
            for child in self.children
            if child.proc.poll() is not None
        ]

    def restart_agent(self, name: str) -> str:
        """Start a stopped agent again (a running one is left alone); returns its URL."""
        label = f"agent {name}"
        old = next((c for c in self.children if c.name == label), None)
        if old is not None and old.proc.poll() is None:
            return self.agent_urls[name]
        if old is not None:
            self.children.remove(old)
        child = self._spawn_agent(name)
        url_file = self.agent_dir(name) / "agent.url"
        self.agent_urls[name] = self._wait(child, functools.partial(read_ready, url_file))
        return self.agent_urls[name]

    def stop(self) -> None:
        """Stop the agents, then the control plane (each: SIGTERM, 10 s, SIGKILL)."""
        for child in reversed(self.children):
            child.stop()
        self.children.clear()

    def _credential_store(self) -> CredentialStore:
        from apps.core.keyring_store import CredentialStore

        try:
            store = CredentialStore()
            store.get_metadata_key("keyvault-demo-probe")
            return store
        except KeyVaultError as exc:
            reason = exc.message.split("; ")[0]  # the cause, without the how-to
        self.memory_keyring = True
        click.echo(f"{reason}.")
        click.echo("The throwaway demo credentials are kept in memory only (gone when it stops).")
        return CredentialStore.memory()

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> Child:
        log = self.folder / "logs" / f"{name.replace(' ', '-')}.log"
        log.parent.mkdir(exist_ok=True)
        with log.open("ab") as out:
            offset = out.tell()
            proc = subprocess.Popen(
                [*CLI, *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl+C in the terminal reaches only the demo
            )
        child = Child(name, proc, log, offset)
        self.children.append(child)
        return child

    def _wait(self, child: Child, check: Callable[[], T | None]) -> T:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            found = check()
            if found:
                return found
            if child.proc.poll() is not None or time.monotonic() > deadline:
                why = "exited" if child.proc.poll() is not None else "did not start in time"
                self.failed_log = f"--- last lines of {child.log} ---\n{child.tail()}"
                raise DemoError(f"the {child.name} {why}; its log is {child.log}")
            time.sleep(0.05)

    # ------------------------------------------------------------ control plane
    @property
    def api_tls_dir(self) -> Path:
        """The operator API's certificate, key and CA (issued from the service CA at init)."""
        return self.cp_dir / "tls"

    def _cp_env(self) -> dict[str, str]:
        ports = self.ports()
        return child_env(
            KEYVAULT_CP_TLS_CERT_FILE=str(self.api_tls_dir / "api.crt"),
            KEYVAULT_CP_TLS_KEY_FILE=str(self.api_tls_dir / "api.key"),
            KEYVAULT_CP_DATABASE_URL=f"sqlite+aiosqlite:///{self.cp_dir / 'control-plane.db'}",
            KEYVAULT_CP_CA_KEY_FILE=str(self.cp_dir / "ca.passphrase"),
            KEYVAULT_CP_PORT=str(ports["api"]),
            KEYVAULT_CP_GATEWAY_PORT=str(ports["gateway"]),
            KEYVAULT_CP_LOG_LEVEL="INFO",
            # a stopped demo agent shows as offline (with an alert) within half a minute
            KEYVAULT_CP_OFFLINE_AFTER_SECONDS="30",
        )

    def _init_control_plane(self) -> None:
        self.cp_dir.mkdir(exist_ok=True, mode=0o700)
        write_private(self.cp_dir / "ca.passphrase", secrets.token_urlsafe(32))
        password = secrets.token_urlsafe(12)
        write_private(self.password_file, password)
        env = {**self._cp_env(), "KEYVAULT_CP_OWNER_PASSWORD": password}
        args = ["control-plane", "init", "--org", ORG_NAME, "--email", OWNER_EMAIL]
        args += ["--tls-dir", str(self.api_tls_dir), "--api-name", "127.0.0.1"]
        done = subprocess.run(
            [*CLI, *args], env=env, capture_output=True, text=True, timeout=START_TIMEOUT
        )
        if done.returncode != 0:
            self.failed_log = (done.stdout + done.stderr).strip()
            raise DemoError("creating the demo organisation failed (output above)")
        self.state["cp_initialised"] = True
        self._save_state()

    def _issue_api_certificate(self) -> None:
        """A demo folder made before the API had TLS: issue its certificate now."""
        args = ["control-plane", "api-cert", "--tls-dir", str(self.api_tls_dir)]
        done = subprocess.run(
            [*CLI, *args, "--api-name", "127.0.0.1"],
            env=self._cp_env(),
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
        )
        if done.returncode != 0:
            self.failed_log = (done.stdout + done.stderr).strip()
            raise DemoError("issuing the control plane's TLS certificate failed (output above)")

    def _start_control_plane(self) -> None:
        if not self.state.get("cp_initialised"):
            with self.step("creating the control plane (SQLite), its owner and TLS certificate"):
                self._init_control_plane()
        elif not (self.api_tls_dir / "api.key").exists():
            with self.step("issuing the control plane's TLS certificate"):
                self._issue_api_certificate()
        with self.step("starting control plane"):
            ready = self.cp_dir / "ready.json"
            ready.unlink(missing_ok=True)
            args = ["control-plane", "run", "--ready-file", str(ready)]
            child = self._spawn("control plane", args, self._cp_env())
            doc = json.loads(self._wait(child, lambda: read_ready(ready)))
            self.api_url, self.gateway_url = str(doc["api_url"]), str(doc["gateway_url"])

    def _login(self) -> None:
        from apps.core.session import Session

        self.password = self.password_file.read_text(encoding="utf-8").strip()
        self._session = Session.login(
            self.api_url,
            OWNER_EMAIL,
            self.password,
            ca_file=str(self.api_tls_dir / "ca.crt"),
            store=self._store,
        )
        self.session.remember(gateway_url=self.gateway_url)

    def _metadata_key(self) -> None:
        """Create the key once (file for the agents + keyring + fingerprint); later, reload it."""
        from common.metadata_key import MetadataKey

        org_id = str(self.session.profile.org_id)
        if self.key_file.exists():
            self.session.store.set_metadata_key(org_id, MetadataKey.load(self.key_file))
            return
        key = MetadataKey.generate()
        key.save(self.key_file)
        self.session.store.set_metadata_key(org_id, key)
        with self.session.client() as cp:
            cp.put_metadata_key(key.fingerprint)

    # ------------------------------------------------------------ agents
    def _init_agent(self, name: str, cp: ControlPlaneClient) -> None:
        from agent.assembly import VERSION
        from agent.provision import InitOptions, initialise
        from agent.uplink.enroll import enroll

        folder = self.agent_dir(name)
        if not (folder / "agent.yaml").exists():
            folder.parent.mkdir(exist_ok=True)
            # the demo's master keys sit beside (not inside) each agent's data folder
            key = folder.parent / "keys" / f"{name}.key"
            result = initialise(InitOptions(folder, key_file=key, port=self.ports()[name]))
            write_private(folder / "admin.token", result.admin_token)
            write_private(folder / "metadata.key", self.key_file.read_text().strip())
        if not (folder / "uplink" / "state.json").exists():
            token = cp.create_enrollment_token(f"demo agent {name}", 3600)["token"]
            enroll(folder, self.gateway_url, str(token), name=name, agent_version=VERSION)

    def _start_agents(self) -> None:
        if not self.state.get("agents_enrolled"):
            with self.step("creating and enrolling agents " + ", ".join(AGENTS)):
                with self.session.client() as cp:
                    for name in AGENTS:
                        self._init_agent(name, cp)
                self.state["agents_enrolled"] = True
                self._save_state()
        with self.step("starting agents " + ", ".join(AGENTS)):
            started = [(name, self._spawn_agent(name)) for name in AGENTS]
            for name, child in started:
                url_file = self.agent_dir(name) / "agent.url"
                self.agent_urls[name] = self._wait(child, functools.partial(read_ready, url_file))

    def _spawn_agent(self, name: str) -> Child:
        folder = self.agent_dir(name)
        (folder / "agent.url").unlink(missing_ok=True)
        args = ["agent", "run", "--data-dir", str(folder), "--port", str(self.ports()[name])]
        return self._spawn(f"agent {name}", args, child_env())

    def agent_token(self, name: str) -> str:
        """An agent's admin token (kept 0600 in its data folder)."""
        return (self.agent_dir(name) / "admin.token").read_text(encoding="utf-8").strip()

    def agent_client(self, name: str) -> AgentClient:
        """A mutual-TLS client for an agent, with its admin token."""
        from common.client import AgentClient

        tls = self.agent_dir(name) / "tls"
        return AgentClient(
            self.agent_urls[name],
            self.agent_token(name),
            ca_file=tls / "ca.crt",
            cert_file=tls / "client.crt",
            key_file=tls / "client.key",
        )

    def _seed(self) -> None:
        """First run: the sample secrets and the policy; every run: a few reads for the usage chart."""
        from common.errors import ConflictError

        for name in AGENTS:
            with self.agent_client(name) as kv:
                for secret, labels in ((s, lb) for a, s, lb in SAMPLES if a == name):
                    if not self.state.get("seeded"):
                        value = f"demo-{secret.replace('/', '-')}-{secrets.token_hex(6)}"
                        with contextlib.suppress(ConflictError):  # a half-done first run
                            kv.create(secret, value, "sample secret of the KeyVault demo", labels)
                    for _ in range(2):
                        kv.get(secret)
        if not self.state.get("seeded"):
            from apps.core.intents import IntentMaker

            sealed = IntentMaker(self.session.metadata_key).policy(POLICY)  # agents run only this
            with self.session.client() as cp:
                cp.create_policy(sealed)
            self.state["seeded"] = True
            self._save_state()

    def _save_agent_connections(self) -> None:
        from apps.core.agents import AgentDirectory, AgentProfile

        directory = AgentDirectory(self.session.store)
        for name in AGENTS:
            profile = AgentProfile.from_data_dir(name, self.agent_urls[name], self.agent_dir(name))
            directory.save(profile, self.agent_token(name))

    def vault_ids(self) -> dict[str, str]:
        """Agent name → vault id, from each agent's enrollment state."""
        ids = {}
        for name in AGENTS:
            doc = json.loads((self.agent_dir(name) / "uplink" / "state.json").read_text())
            ids[name] = str(doc["vault_id"])
        return ids

    def _wait_online(self) -> None:
        wanted = set(self.vault_ids().values())
        deadline = time.monotonic() + START_TIMEOUT
        with self.session.client() as cp:
            while True:
                online = {v["id"] for v in cp.iter_vaults() if v.get("status") == "online"}
                if wanted <= online:
                    return
                if time.monotonic() > deadline:
                    raise DemoError(f"the agents did not come online; see {self.folder / 'logs'}")
                time.sleep(0.2)
