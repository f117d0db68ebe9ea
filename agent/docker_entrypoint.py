"""The agent's container entrypoint: initialise ``/app/data`` once, enroll once, then serve.

``python -m agent.docker_entrypoint`` (the image's ENTRYPOINT) does, in order:

1. read the settings as ``keyvault agent run`` does (YAML < ``KEYVAULT_…`` environment), with the
   seed's ``VAULT_MASTER_KEY_FILE`` and ``CONTROL_PLANE_URL``; the data folder is
   ``$KEYVAULT_DATA_DIR``, else ``<app dir>/data``; the YAML file is ``$KEYVAULT_CONFIG``, else
   ``<app dir>/config/agent.yaml`` when present, else the one ``init`` wrote into the data folder;
2. refuse to start without a master key (a missing key file is never generated here: a key made
   inside a container is a key nobody has a copy of);
3. on first start (no ``agent.yaml`` in the data folder) do what ``keyvault agent init`` does and
   write the first admin token to a 0600 file (never to the log);
4. when an enrollment token is given and the folder is not enrolled yet, enroll;
5. serve until SIGTERM, then exit 0.

``python -m agent.docker_entrypoint health`` asks ``GET /api/v1/health`` (a full check, for people);
the image's HEALTHCHECK only checks the heartbeat file (``KEYVAULT_HEARTBEAT_FILE``,
serverkit/heartbeat.py) is fresh, which spawns no interpreter.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent import CONFIG_NAME, platform
from agent.settings import AgentSettings
from common.errors import ConfigError, KeyVaultError
from common.typedconf import load_settings

log = logging.getLogger("keyvault.agent.docker_entrypoint")

APP_DIR_ENV = "KEYVAULT_APP_DIR"
DEFAULT_APP_DIR = Path("/app")

# Variables this entrypoint reads besides the settings' own (docs/configuration.md lists them).
ENV_VARS: dict[str, str] = {
    APP_DIR_ENV: "Base folder of the container layout (default /app): config/ and data/ below it.",
    "KEYVAULT_DATA_DIR": "The agent's data folder (default <app dir>/data).",
    "KEYVAULT_CONFIG": "YAML settings file (default <app dir>/config/agent.yaml when present).",
    "KEYVAULT_ENROLLMENT_TOKEN": "Single-use enrollment token (kve_…); used once, on first start.",
    "KEYVAULT_ENROLLMENT_TOKEN_FILE": "File holding the enrollment token instead (preferred).",
    "KEYVAULT_VAULT_NAME": "The vault's name in the control plane (default: the host name).",
    "KEYVAULT_TLS_HOSTNAMES": "Comma-separated extra DNS names for the self-signed certificate.",
    "KEYVAULT_ADMIN_TOKEN_FILE": "Where first start writes the admin token (default <data>/admin.token).",
    "KEYVAULT_HEARTBEAT_FILE": "Once serving, touch this file every 5 s (the image's HEALTHCHECK "
    "checks it is fresh); unset: no file.",
}


@dataclass(frozen=True)
class Layout:
    """Where the container keeps its files."""

    data_dir: Path
    config_file: Path | None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Layout:
        """The layout the environment asks for (``/app/config`` and ``/app/data`` by default)."""
        app = Path(env.get(APP_DIR_ENV) or DEFAULT_APP_DIR)
        data = Path(env.get("KEYVAULT_DATA_DIR") or app / "data")
        if env.get("KEYVAULT_CONFIG"):
            return cls(data, Path(env["KEYVAULT_CONFIG"]))
        user = app / "config" / CONFIG_NAME
        return cls(data, user if user.exists() else None)

    def settings(self) -> AgentSettings:
        """Settings from the YAML file in force, the environment and the data folder."""
        config = self.config_file
        if config is None and (self.data_dir / CONFIG_NAME).exists():
            config = self.data_dir / CONFIG_NAME
        return load_settings(AgentSettings, config, {"data_dir": self.data_dir})


def check_master_key(settings: AgentSettings) -> None:
    """Stop with one line when no usable master key is configured."""
    path = settings.master_key_file
    if path is None:
        if settings.master_passphrase is None:
            raise ConfigError(
                "no master key: set VAULT_MASTER_KEY_FILE to a 32-byte key file "
                "(e.g. /app/config/master.key) or KEYVAULT_MASTER_PASSPHRASE"
            )
        return
    if not path.is_file():
        raise ConfigError(
            f"master key file {path} does not exist (VAULT_MASTER_KEY_FILE); create it "
            f"outside the container with `openssl rand -hex 32 > master.key` and keep a copy"
        )
    if not os.access(path, os.R_OK):
        raise ConfigError(
            f"master key file {path} is not readable by uid {platform.effective_uid()}; "
            "make it readable by the container's user (uid 10001)"
        )


def first_start(settings: AgentSettings, env: Mapping[str, str]) -> None:
    """Initialise the data folder like ``keyvault agent init``; the admin token goes to a file."""
    from agent.hardening import create_private
    from agent.provision import InitOptions, initialise

    hostnames = tuple(h.strip() for h in env.get("KEYVAULT_TLS_HOSTNAMES", "").split(",") if h)
    passphrase = settings.master_passphrase
    result = initialise(
        InitOptions(
            settings.data_dir,
            key_file=settings.master_key_file,
            passphrase=passphrase.get_secret_value() if passphrase else None,
            iterations=settings.kdf_iterations,
            hostnames=hostnames,
            client_cert_mode=settings.tls.client_cert,
            storage_url=settings.storage.url,
            bind=settings.bind,
            port=settings.port,
            # a URL from the environment (e.g. a Kubernetes secretKeyRef) keeps its password
            # there: never written into agent.yaml on the volume
            storage_url_from_env=bool(env.get("KEYVAULT_STORAGE__URL")),
        )
    )
    token_file = Path(env.get("KEYVAULT_ADMIN_TOKEN_FILE") or settings.data_dir / "admin.token")
    create_private(token_file, (result.admin_token + "\n").encode())
    log.info("initialised vault %s; admin token written to %s", result.vault_id, token_file)


def enrollment_token(env: Mapping[str, str]) -> str | None:
    """The enrollment token from ``KEYVAULT_ENROLLMENT_TOKEN(_FILE)``, or None."""
    path = env.get("KEYVAULT_ENROLLMENT_TOKEN_FILE")
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise ConfigError(
                f"enrollment token file {path} (KEYVAULT_ENROLLMENT_TOKEN_FILE) cannot be read: "
                f"{exc.strerror}"
            ) from None
    return env.get("KEYVAULT_ENROLLMENT_TOKEN") or None


def enroll_once(settings: AgentSettings, env: Mapping[str, str]) -> None:
    """Enroll with the control plane when a token is given and the folder is not enrolled."""
    from agent.assembly import VERSION
    from agent.uplink.enroll import enroll
    from agent.uplink.state import UplinkFiles

    token = enrollment_token(env)
    if token is None:
        return
    if UplinkFiles(settings.uplink_dir).load_state() is not None:
        log.info("already enrolled; the enrollment token is not used again")
        return
    if not settings.control_plane_url:
        raise ConfigError("an enrollment token is set but CONTROL_PLANE_URL is not")
    result = enroll(
        settings.data_dir,
        settings.control_plane_url,
        token,
        name=env.get("KEYVAULT_VAULT_NAME") or None,
        agent_version=VERSION,
    )
    log.info("enrolled as vault %s with %s", result.vault_id, result.control_plane_url)


def prepare(env: Mapping[str, str]) -> AgentSettings:
    """Steps 1-4 of the module docstring; returns the settings to serve with."""
    from agent.logs import setup_logging

    layout = Layout.from_env(env)
    settings = layout.settings()
    check_master_key(settings)
    setup_logging(settings.log_level, settings.log_format)
    if not (settings.data_dir / CONFIG_NAME).exists():
        first_start(settings, env)
        settings = layout.settings()
    enroll_once(settings, env)
    return settings


def run(env: Mapping[str, str]) -> None:
    """Prepare, then serve until SIGTERM/SIGINT."""
    from agent.serve import serve
    from common.eventloop import run_event_loop
    from serverkit.heartbeat import Heartbeat

    settings = prepare(env)
    heartbeat = Heartbeat.from_env(env)

    def ready(url: str) -> None:
        log.info("listening on %s", url)
        heartbeat.start()

    async def main() -> None:
        try:
            await serve(settings, on_ready=ready)
        finally:
            heartbeat.stop()

    run_event_loop(main())


def health(env: Mapping[str, str]) -> None:
    """Ask the running agent for ``/api/v1/health`` over its own TLS; raise when it is down."""
    from common.client import AgentClient

    settings = Layout.from_env(env).settings()
    try:
        url = (settings.data_dir / "agent.url").read_text(encoding="utf-8").strip()
    except OSError:
        raise KeyVaultError("the agent is not serving (no agent.url in its data folder)") from None
    tls = settings.tls_dir
    certs = {"cert_file": tls / "client.crt", "key_file": tls / "client.key"}
    extra = certs if all(p.exists() for p in certs.values()) else {}
    with AgentClient(url, None, ca_file=tls / "ca.crt", **extra) as client:
        status = client.health()["status"]
    print(status)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m agent.docker_entrypoint [run|health]``; one line and an exit code on error."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args else "run"
    actions = {"run": run, "health": health}
    if command not in actions or len(args) > 1:
        print("usage: python -m agent.docker_entrypoint [run|health]", file=sys.stderr)
        return 64
    try:
        actions[command](os.environ)
    except KeyVaultError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 71  # EX_OSERR
    return 0


if __name__ == "__main__":
    sys.exit(main())
