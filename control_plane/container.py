"""The control plane's container entrypoint: migrate the database, then serve until SIGTERM.

``python -m control_plane.container`` (the image's ENTRYPOINT) reads the settings from the
``KEYVAULT_CP_…`` environment (and ``<app dir>/config/control-plane.yaml`` when present), takes
the database and Redis URLs from files when ``KEYVAULT_CP_DATABASE_URL_FILE`` /
``KEYVAULT_CP_REDIS_URL_FILE`` are set (they hold passwords), brings the schema to the newest
revision, and serves the operator API and the agent gateway. ``python -m control_plane.container health`` asks the operator API (a full check, for
people); the image's HEALTHCHECK only checks the heartbeat file (serverkit/heartbeat.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from common.errors import ConfigError, KeyVaultError, UnavailableError
from control_plane.settings import ControlPlaneSettings, load_cp_settings

APP_DIR_ENV = "KEYVAULT_APP_DIR"
DEFAULT_APP_DIR = Path("/app")
CONFIG_NAME = "control-plane.yaml"

# Variables this entrypoint reads besides the settings' own (docs/configuration.md lists them).
ENV_VARS: dict[str, str] = {
    APP_DIR_ENV: "Base folder of the container layout (default /app).",
    "KEYVAULT_CP_CONFIG": "YAML settings file (default <app dir>/config/control-plane.yaml when present).",
    "KEYVAULT_CP_DATABASE_URL_FILE": "File holding database_url (first line), so its password stays out of the environment.",
    "KEYVAULT_CP_REDIS_URL_FILE": "File holding redis_url (first line), so Redis's password "
    "stays out of the environment: redis://:PASSWORD@host:6379/0.",
    "KEYVAULT_CP_READY_FILE": 'Once listening, write {"api_url", "gateway_url"} here as JSON.',
    "KEYVAULT_CP_OWNER_PASSWORD_FILE": "File holding the first owner's password (for `init`).",
    "KEYVAULT_CP_OWNER_PASSWORD": "The first owner's password (for `init`; prefer the file).",
    "KEYVAULT_CP_API_TLS_DIR": "Where the first start issues the operator API's certificate from "
    "the service CA when no tls_cert_file is set (default <app dir>/tls; clients trust ca.crt).",
    "KEYVAULT_HEARTBEAT_FILE": "Once listening, touch this file every 5 s (the image's "
    "HEALTHCHECK checks it is fresh); unset: no file.",
    "KEYVAULT_CP_API_NAMES": "Comma-separated names/IPs for that certificate "
    "(default control-plane,localhost,127.0.0.1).",
}
DEFAULT_API_NAMES = "control-plane,localhost,127.0.0.1"


def config_file(env: Mapping[str, str]) -> Path | None:
    """The YAML file in force, or None."""
    if env.get("KEYVAULT_CP_CONFIG"):
        return Path(env["KEYVAULT_CP_CONFIG"])
    default = Path(env.get(APP_DIR_ENV) or DEFAULT_APP_DIR) / "config" / CONFIG_NAME
    return default if default.exists() else None


def url_from_file(env: Mapping[str, str], variable: str, what: str) -> str | None:
    """The first line of the file ``variable`` names, or None when it is not set."""
    path = env.get(variable)
    if not path:
        return None
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(
            f"{what} file {path} ({variable}) cannot be read: {exc.strerror}"
        ) from None
    if not lines or not lines[0].strip():
        raise ConfigError(f"{what} file {path} ({variable}) is empty")
    return lines[0].strip()


def database_url_from_file(env: Mapping[str, str]) -> str | None:
    """The first line of ``KEYVAULT_CP_DATABASE_URL_FILE``, or None when it is not set."""
    return url_from_file(env, "KEYVAULT_CP_DATABASE_URL_FILE", "database URL")


def redis_url_from_file(env: Mapping[str, str]) -> str | None:
    """The first line of ``KEYVAULT_CP_REDIS_URL_FILE`` (a URL with Redis's password), or None."""
    return url_from_file(env, "KEYVAULT_CP_REDIS_URL_FILE", "Redis URL")


def load(env: Mapping[str, str]) -> ControlPlaneSettings:
    """Settings from the YAML file, the environment and the database URL file."""
    files = {"database_url": database_url_from_file(env), "redis_url": redis_url_from_file(env)}
    return load_cp_settings(config_file(env), files)  # an unset file overrides nothing


def api_tls(env: Mapping[str, str], settings: ControlPlaneSettings) -> ControlPlaneSettings:
    """Settings with the operator API's TLS files: the configured ones, or on a first start a
    certificate issued from the deployment's service CA into ``KEYVAULT_CP_API_TLS_DIR``
    (kept for later starts). Nothing changes behind a declared TLS proxy or on loopback."""
    from control_plane.api_tls import (
        existing_files,
        is_loopback_bind,
        issue_api_certificate,
        write_api_tls,
    )

    if settings.tls_cert_file is not None or settings.tls_proxy or is_loopback_bind(settings.bind):
        return settings
    from control_plane.runtime import open_control_plane

    folder = Path(env.get("KEYVAULT_CP_API_TLS_DIR") or _app_dir(env) / "tls")
    files = existing_files(folder)
    if files is None:
        names = [n.strip() for n in env.get("KEYVAULT_CP_API_NAMES", DEFAULT_API_NAMES).split(",")]

        async def issue() -> tuple[bytes, bytes, bytes]:
            cp = await open_control_plane(settings.model_copy(update={"redis_url": None}))
            try:
                return await issue_api_certificate(cp, [n for n in names if n])
            finally:
                await cp.close()

        files = write_api_tls(folder, asyncio.run(issue()))
        logging.getLogger("keyvault.cp.container").info(
            "issued the operator API a certificate from the service CA: %s (pin %s); "
            "clients trust %s",
            files.cert_file,
            files.pin,
            files.ca_file,
        )
    return settings.model_copy(
        update={"tls_cert_file": files.cert_file, "tls_key_file": files.key_file}
    )


def _app_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get(APP_DIR_ENV) or DEFAULT_APP_DIR)


async def migrate(settings: ControlPlaneSettings) -> None:
    """Bring the database schema to the newest revision."""
    from control_plane import db

    engine = db.make_engine(settings.database_url)
    try:
        await db.migrate(engine)
    finally:
        await engine.dispose()


def run(env: Mapping[str, str]) -> None:
    """Check the settings, migrate, then serve until SIGTERM/SIGINT."""
    from common.eventloop import run_event_loop
    from control_plane.serve import serve
    from serverkit.heartbeat import Heartbeat

    settings = load(env)
    if settings.ca_passphrase() is None:
        raise ConfigError(
            "no CA key passphrase: set KEYVAULT_CP_CA_KEY_FILE (preferred) or "
            "KEYVAULT_CP_CA_KEY_PASSPHRASE; it encrypts every organisation's CA key"
        )
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    asyncio.run(migrate(settings))
    logging.getLogger("keyvault.cp.container").info("database is at the newest revision")
    settings = api_tls(env, settings)
    ready = env.get("KEYVAULT_CP_READY_FILE")
    heartbeat = Heartbeat.from_env(env)

    def echo(line: str) -> None:  # serve echoes its URLs once both servers listen
        print(line, file=sys.stderr, flush=True)
        heartbeat.start()

    async def main() -> None:
        try:
            await serve(settings, ready_file=Path(ready) if ready else None, echo=echo)
        finally:
            heartbeat.stop()

    try:
        run_event_loop(main())
    except OSError as exc:
        raise ConfigError(f"cannot listen: {exc.strerror or exc}") from None


def api_url(env: Mapping[str, str]) -> str:
    """The operator API's URL on this host: from the ready file when there is one."""
    ready = Path(env.get("KEYVAULT_CP_READY_FILE") or "/nonexistent")
    if ready.is_file():
        return str(json.loads(ready.read_text(encoding="utf-8"))["api_url"])
    from control_plane.api_tls import is_loopback_bind

    settings = load(env)
    host = "127.0.0.1" if settings.bind in ("", "0.0.0.0") else settings.bind
    host = "::1" if host == "::" else host
    tls_dir = Path(env.get("KEYVAULT_CP_API_TLS_DIR") or _app_dir(env) / "tls")
    tls = settings.tls_cert_file is not None or (
        not settings.tls_proxy
        and not is_loopback_bind(settings.bind)
        and (tls_dir / "api.crt").is_file()
    )
    scheme = "https" if tls else "http"
    netloc = f"[{host}]:{settings.port}" if ":" in host else f"{host}:{settings.port}"
    return f"{scheme}://{netloc}"


def health(env: Mapping[str, str]) -> None:
    """``GET /api/v1/health`` of the operator API on this host; raise when it is not healthy."""
    import ssl

    import httpx

    # a liveness probe on this host that sends no credential: the chain is verified (the
    # first start's ca.crt, else the system's CAs), the name is not (the probe dials an IP)
    ca = Path(env.get("KEYVAULT_CP_API_TLS_DIR") or _app_dir(env) / "tls") / "ca.crt"
    ctx = ssl.create_default_context(cafile=str(ca) if ca.is_file() else None)
    ctx.check_hostname = False
    try:
        answer = httpx.get(api_url(env) + "/api/v1/health", timeout=5, verify=ctx)
    except httpx.HTTPError as exc:
        raise UnavailableError(f"the control plane does not answer: {exc}") from None
    if answer.status_code != 200:
        raise UnavailableError(f"the control plane is unhealthy (HTTP {answer.status_code})")
    print(json.dumps(answer.json()))


def init(env: Mapping[str, str], org: str, email: str) -> None:
    """Migrate, then create the first organisation and its owner (password from a file)."""
    from control_plane.runtime import open_control_plane

    password = _owner_password(env)
    settings = load(env).model_copy(update={"redis_url": None})

    async def go() -> dict[str, str]:
        cp = await open_control_plane(settings)
        try:
            return dict(await cp.accounts.create_org(org, email, password))
        finally:
            await cp.close()

    result = asyncio.run(go())
    print(f"created organisation {result['org_id']} with owner {result['email']}")


def _owner_password(env: Mapping[str, str]) -> str:
    path = env.get("KEYVAULT_CP_OWNER_PASSWORD_FILE")
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"owner password file {path} cannot be read: {exc.strerror}"
            ) from None
        if text:
            return text
    if env.get("KEYVAULT_CP_OWNER_PASSWORD"):
        return env["KEYVAULT_CP_OWNER_PASSWORD"]
    raise ConfigError(
        "set KEYVAULT_CP_OWNER_PASSWORD_FILE (or KEYVAULT_CP_OWNER_PASSWORD) for init"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m control_plane.container")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="migrate, then serve (the default)")
    sub.add_parser("health", help="exit 0 when the operator API answers healthy")
    init_p = sub.add_parser("init", help="create the first organisation and its owner")
    init_p.add_argument("--org", required=True, help="name of the organisation")
    init_p.add_argument("--email", required=True, help="e-mail address of its owner")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m control_plane.container [run|health|init]``; one line and an exit code on error."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "init":
            init(os.environ, args.org, args.email)
        elif args.command == "health":
            health(os.environ)
        else:
            run(os.environ)
    except KeyVaultError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
