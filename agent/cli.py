"""``keyvault agent …``: initialise, run and administer a vault agent."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import click

from agent import CONFIG_NAME
from agent.crypto import KDF_DEFAULT_ITERATIONS
from agent.service.commands import install_service_cmd, windows_service_group
from agent.settings import AgentSettings, load_agent_settings
from common.cliutil import agent_options, client_config, friendly_errors, make_client
from common.errors import ConfigError, KeyVaultError, ValidationError

DATA_DIR_HELP = "The agent's data folder (default ./keyvault-data, or KEYVAULT_DATA_DIR)."


@click.group("agent")
def agent_group() -> None:
    """Initialise, run and administer a vault agent."""


agent_group.add_command(install_service_cmd)
agent_group.add_command(windows_service_group)


@agent_group.command("init")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    envvar="KEYVAULT_DATA_DIR",
    default=Path("keyvault-data"),
    show_default=True,
    help=DATA_DIR_HELP,
)
@click.option(
    "--key-file",
    type=click.Path(path_type=Path),
    help="Master key file to use, or to create if missing (default <data-dir>/master.key).",
)
@click.option(
    "--passphrase",
    "use_passphrase",
    is_flag=True,
    help="Use a passphrase (KEYVAULT_MASTER_PASSPHRASE, or asked for) instead of a key file.",
)
@click.option(
    "--iterations",
    type=click.IntRange(100_000, 10_000_000),
    default=KDF_DEFAULT_ITERATIONS,
    show_default=True,
    help="PBKDF2 iterations for a passphrase.",
)
@click.option(
    "--hostname", "hostnames", multiple=True, help="Extra DNS name for the server certificate."
)
@click.option(
    "--tls-cert", type=click.Path(exists=True, path_type=Path), help="Your own server certificate."
)
@click.option("--tls-key", type=click.Path(exists=True, path_type=Path), help="Its private key.")
@click.option(
    "--client-ca", type=click.Path(exists=True, path_type=Path), help="CA of client certificates."
)
@click.option(
    "--client-cert",
    "client_cert_mode",
    type=click.Choice(["required", "optional", "none"]),
    default="required",
    show_default=True,
    help="Whether clients must show a certificate signed by the agent's CA (mutual TLS). "
    "'optional' lets a bearer token alone reach secrets; the agent logs that choice at start.",
)
@click.option(
    "--storage-url", help="SQLAlchemy URL of the store (default SQLite in the data folder)."
)
@click.option(
    "--storage-url-from-env",
    is_flag=True,
    help="Take the store URL from KEYVAULT_STORAGE__URL and keep its password there: agent.yaml "
    "gets the URL without the password, and the agent reads the variable at every start.",
)
@click.option("--bind", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port."
)
@click.option(
    "--token-file",
    type=click.Path(path_type=Path),
    help="Also write the admin token to this file (mode 0600) instead of only showing it.",
)
@click.option(
    "--join",
    is_flag=True,
    help="Join the vault already in the shared PostgreSQL store (--storage-url) as another "
    "replica: same master key, no new keystore, no new admin token.",
)
@friendly_errors
def init_cmd(
    data_dir: Path,
    key_file: Path | None,
    use_passphrase: bool,
    iterations: int,
    hostnames: tuple[str, ...],
    tls_cert: Path | None,
    tls_key: Path | None,
    client_ca: Path | None,
    client_cert_mode: str,
    storage_url: str | None,
    storage_url_from_env: bool,
    bind: str,
    port: int,
    token_file: Path | None,
    join: bool,
) -> None:
    """Create a data folder: keystore, store, TLS certificates, config and a first admin token."""
    from agent.hardening import create_private
    from agent.provision import InitOptions, initialise

    if (data_dir / CONFIG_NAME).exists():
        raise ConfigError(
            f"{data_dir.resolve()} already holds an agent ({CONFIG_NAME} exists); refusing to overwrite it"
        )
    if token_file is not None and os.path.lexists(token_file):
        raise ConfigError(
            f"--token-file {token_file} already exists; give a new path (the admin token is "
            "never written into an existing file or through a link)"
        )
    if storage_url_from_env:
        if storage_url is not None:
            raise ConfigError("give --storage-url or --storage-url-from-env, not both")
        storage_url = os.environ.get("KEYVAULT_STORAGE__URL") or None
        if storage_url is None:
            raise ConfigError(
                "--storage-url-from-env is set but KEYVAULT_STORAGE__URL is empty; set it to the "
                "store's SQLAlchemy URL (postgresql+psycopg://user:password@host/db)"
            )
    passphrase = None
    if use_passphrase:
        passphrase = os.environ.get("KEYVAULT_MASTER_PASSPHRASE") or click.prompt(
            "Master passphrase", hide_input=True, confirmation_prompt=True
        )
    click.echo("Initialising the vault (deriving the master key)…", err=True)
    result = initialise(
        InitOptions(
            data_dir,
            key_file,
            passphrase,
            iterations,
            hostnames,
            tls_cert,
            tls_key,
            client_ca,
            client_cert_mode,
            storage_url,
            bind,
            port,
            join,
            storage_url_from_env,
        )
    )
    if join:
        click.echo(f"Joined vault {result.vault_id} in its shared store; config in {data_dir}")
        return
    if token_file is not None:
        create_private(token_file, (result.admin_token + "\n").encode())
    click.echo(f"Vault {result.vault_id} initialised in {data_dir.resolve()}")
    click.echo(f"  config:     {result.config_file}")
    if result.key_file:
        click.echo(
            f"  master key: {result.key_file}  (keep a copy off this disk; without it nothing decrypts)"
        )
        if key_file is None:
            click.echo(
                "              kept outside the data folder on purpose: a copy of the data "
                "folder (a backup, a stolen disk image) must not carry the key that opens it"
            )
    click.echo(f"  TLS CA:     {result.ca_file}")
    if token_file is not None:
        click.echo(f"  admin token written to {token_file}")
    else:
        click.echo("\nAdmin token (shown once, store it now):")
        click.echo(f"  {result.admin_token}")
    click.echo(f"\nStart it with:  keyvault agent run --data-dir {data_dir}")


@agent_group.command("run")
@click.option(
    "--data-dir", type=click.Path(path_type=Path), envvar="KEYVAULT_DATA_DIR", help=DATA_DIR_HELP
)
@click.option(
    "--config",
    type=click.Path(path_type=Path),
    envvar="KEYVAULT_CONFIG",
    help="YAML config file (default <data-dir>/agent.yaml).",
)
@click.option("--port", type=click.IntRange(0, 65535), help="Override the configured port.")
@click.option("--bind", help="Override the configured address.")
@friendly_errors
def run_cmd(data_dir: Path | None, config: Path | None, port: int | None, bind: str | None) -> None:
    """Serve the agent API until SIGTERM or Ctrl+C."""
    from agent.logs import setup_logging
    from agent.serve import serve
    from common.eventloop import run_event_loop

    settings = load_agent_settings(config, data_dir, port=port, bind=bind)
    setup_logging(settings.log_level, settings.log_format)
    run_event_loop(
        serve(
            settings,
            on_ready=lambda url: click.echo(f"keyvault agent listening on {url}", err=True),
        )
    )


@agent_group.command("enroll")
@click.option(
    "--control-plane",
    "control_plane",
    required=True,
    envvar="CONTROL_PLANE_URL",
    help="The control plane's agent gateway, e.g. https://keyvault.example.com:8444.",
)
@click.option(
    "--token",
    required=True,
    envvar="KEYVAULT_ENROLLMENT_TOKEN",
    help="The single-use enrollment token (kve_…); or set KEYVAULT_ENROLLMENT_TOKEN.",
)
@click.option("--name", help="The vault's name in the control plane (default: this host's name).")
@click.option(
    "--data-dir", type=click.Path(path_type=Path), envvar="KEYVAULT_DATA_DIR", help=DATA_DIR_HELP
)
@click.option(
    "--config",
    type=click.Path(path_type=Path),
    envvar="KEYVAULT_CONFIG",
    help="YAML config file (default <data-dir>/agent.yaml).",
)
@click.option(
    "--metadata-key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The organisation's metadata key file: installed as <data-dir>/metadata.key (0600), "
    "so operators see secret names.",
)
@click.option("--force", is_flag=True, help="Replace an existing enrollment of this data folder.")
@friendly_errors
def enroll_cmd(
    control_plane: str,
    token: str,
    name: str | None,
    data_dir: Path | None,
    config: Path | None,
    metadata_key_file: Path | None,
    force: bool,
) -> None:
    """Join a control plane: check its CA pin, get a client certificate, store it.

    A running agent picks the enrollment up within a few seconds.
    """
    from agent.assembly import VERSION
    from agent.uplink.enroll import enroll

    settings = load_agent_settings(config, data_dir)
    if metadata_key_file is not None:  # checked and installed before the token is spent
        _install_metadata_key(metadata_key_file, settings.data_dir / "metadata.key", force)
        settings = load_agent_settings(config, data_dir)
    result = enroll(
        settings.data_dir, control_plane, token, name=name, force=force, agent_version=VERSION
    )
    click.echo(
        f"enrolled as vault {result.vault_id} ({result.name}) with {result.control_plane_url}"
    )
    click.echo(f"  identity:    {settings.uplink_dir}  (client.key never leaves this host)")
    click.echo(
        f"  certificate: valid until {result.certificate_not_after.isoformat()}, renewed automatically"
    )
    if settings.metadata_key_path is None:
        click.echo(
            "  no metadata key: the control plane will see opaque secret ids only; enroll with "
            "--metadata-key-file FILE (or copy it to <data-dir>/metadata.key) to show names"
        )
    else:
        click.echo(f"  metadata key: {settings.metadata_key_path} (names are sealed with it)")
    click.echo(
        "A running agent connects within a few seconds; otherwise start it with `keyvault agent run`."
    )


def _install_metadata_key(source: Path, target: Path, force: bool) -> None:
    """Copy the organisation's metadata key into the data folder (0600); a different key
    already there is kept unless ``--force``."""
    from common.metadata_key import MetadataKey

    key = MetadataKey.load(source)
    if target.exists():
        if MetadataKey.load(target).fingerprint == key.fingerprint:
            return
        if not force:
            raise ConfigError(
                f"{target} holds another metadata key; pass --force to replace it (agents "
                "with a key the control plane does not know are refused)"
            )
        target.unlink()  # key files are written once (O_EXCL): replace by removing first
    key.save(target)


@agent_group.command("status")
@agent_options
@friendly_errors
def status_cmd(**conn: Any) -> None:
    """Show a running agent's health."""
    with make_client(client_config(**conn)) as kv:
        click.echo(json.dumps(kv.health(), indent=2))


# ------------------------------------------------------------------ tokens


@agent_group.group("token")
def token_group() -> None:
    """Create, list and revoke bearer tokens (needs an admin token)."""


def parse_ttl(text: str | None) -> int | None:
    """``90s``, ``15m``, ``12h``, ``30d`` → seconds."""
    if not text:
        return None
    match = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if not match:
        raise ValidationError(f"--ttl {text!r} must look like 90s, 15m, 12h or 30d")
    return int(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def parse_policy(rules: tuple[str, ...]) -> list[dict[str, Any]]:
    """``--allow 'app/**:read,list'`` options → policy rules."""
    out = []
    for rule in rules:
        path, sep, caps = rule.rpartition(":")
        if not sep or not path or not caps:
            raise ValidationError(f"--allow {rule!r} must look like 'PATH_GLOB:cap1,cap2'")
        out.append(
            {"path": path, "capabilities": [c.strip() for c in caps.split(",") if c.strip()]}
        )
    return out


@token_group.command("create")
@click.option("--name", required=True, help="What the token is for.")
@click.option(
    "--allow",
    "rules",
    multiple=True,
    required=True,
    help="A rule 'GLOB:caps', e.g. 'app/**:read,list'. Repeatable. Caps: read list write rotate delete admin.",
)
@click.option("--ttl", help="Lifetime such as 12h or 30d (default: no expiry).")
@agent_options
@friendly_errors
def token_create(name: str, rules: tuple[str, ...], ttl: str | None, **conn: Any) -> None:
    """Mint a token; its secret is printed once."""
    with make_client(client_config(**conn)) as kv:
        made = kv.create_token(name, parse_policy(rules), parse_ttl(ttl))
    click.echo(f"token {made['info']['id']} ({name}) created; its secret, shown once:", err=True)
    click.echo(made["token"])


@token_group.command("list")
@agent_options
@friendly_errors
def token_list(**conn: Any) -> None:
    """List tokens (never their secrets)."""
    with make_client(client_config(**conn)) as kv:
        tokens = kv.list_tokens()["tokens"]
    for tok in tokens:
        state = (
            "revoked"
            if tok["revoked_at"]
            else ("expires " + tok["expires_at"] if tok["expires_at"] else "active")
        )
        rules = "; ".join(f"{r['path']}:{','.join(r['capabilities'])}" for r in tok["policy"])
        click.echo(f"{tok['id']}  {tok['name']:<24} {state:<34} {rules}")


@token_group.command("revoke")
@click.argument("token_id")
@agent_options
@friendly_errors
def token_revoke(token_id: str, **conn: Any) -> None:
    """Revoke a token by id."""
    with make_client(client_config(**conn)) as kv:
        kv.revoke_token(token_id)
    click.echo(f"token {token_id} revoked")


# ------------------------------------------------------------------ keys


def _follow_job(kv: Any, job: dict[str, Any], label: str) -> dict[str, Any]:
    with click.progressbar(length=max(job["total"], 1), label=label, show_pos=True) as bar:
        shown = 0
        while True:
            job = kv.job(job["id"])
            if job["total"] and bar.length != job["total"]:
                bar.length = job["total"]
            bar.update(job["done"] - shown)
            shown = job["done"]
            if job["state"] != "running":
                break
            time.sleep(0.2)
    if job["state"] == "failed":
        raise KeyVaultError(f"{label} failed: {job['error']}")
    return job


@agent_group.command("rotate-kek")
@agent_options
@friendly_errors
def rotate_kek_cmd(**conn: Any) -> None:
    """New key-encryption key, online re-wrap of every data key, then destroy the old KEK."""
    with make_client(client_config(**conn)) as kv:
        job = _follow_job(kv, kv.rotate_kek(), "re-wrapping data keys")
    res = job["result"]
    click.echo(
        f"KEK v{res['new_version']} active; {res['rewrapped']} data keys re-wrapped; "
        f"destroyed: {', '.join(f'v{v}' for v in res['destroyed']) or 'none'}"
    )


@agent_group.command("rekey")
@click.option(
    "--new-key-file",
    type=click.Path(path_type=Path),
    help="New 32-byte key file, as a path on the agent's host.",
)
@click.option(
    "--new-passphrase", "use_passphrase", is_flag=True, help="Switch to a passphrase (asked for)."
)
@click.option(
    "--iterations",
    type=click.IntRange(100_000, 10_000_000),
    default=KDF_DEFAULT_ITERATIONS,
    show_default=True,
)
@agent_options
@friendly_errors
def rekey_cmd(
    new_key_file: Path | None, use_passphrase: bool, iterations: int, **conn: Any
) -> None:
    """Change the master key: every KEK is re-wrapped; values are untouched."""
    if (new_key_file is None) == (not use_passphrase):
        raise ConfigError("give exactly one of --new-key-file or --new-passphrase")
    phrase = None
    if use_passphrase:
        phrase = os.environ.get("KEYVAULT_NEW_MASTER_PASSPHRASE") or click.prompt(
            "New master passphrase", hide_input=True, confirmation_prompt=True
        )
    with make_client(client_config(**conn)) as kv:
        path = str(new_key_file.resolve()) if new_key_file else None
        job = _follow_job(kv, kv.rekey(path, phrase, iterations), "re-wrapping key-encryption keys")
    tracked = bool((job.get("result") or {}).get("config_updated"))
    if new_key_file:
        where = f"names {new_key_file.resolve()}"
        todo = f"set VAULT_MASTER_KEY_FILE={new_key_file.resolve()} where the agent starts"
    else:
        where = "names no key file (the passphrase is asked for at start)"
        todo = "set KEYVAULT_MASTER_PASSPHRASE where the agent starts"
    if tracked:
        click.echo(f"master key changed; the agent's agent.yaml now {where}.")
        if not new_key_file:
            click.echo(f"Before its next start, {todo}.")
    else:
        click.echo(f"master key changed. Before the agent's next start, {todo}.")


# ------------------------------------------------------------------ audit and backup


@agent_group.group("audit")
def audit_group() -> None:
    """The local, hash-chained audit log."""


@audit_group.command("verify")
@click.option(
    "--data-dir", type=click.Path(path_type=Path), envvar="KEYVAULT_DATA_DIR", help=DATA_DIR_HELP
)
@click.option("--config", type=click.Path(path_type=Path), envvar="KEYVAULT_CONFIG")
@friendly_errors
def audit_verify_cmd(data_dir: Path | None, config: Path | None) -> None:
    """Check every entry's MAC and link; finds edits, deletions, reordering and truncation."""
    from agent.assembly import key_source
    from agent.audit import verify
    from agent.keys import KeyManager
    from agent.store.db import Store
    from agent.workers import audit_folders

    settings = load_agent_settings(config, data_dir)
    store = Store(settings.storage_url)
    try:
        keys = KeyManager.unlock(store, key_source(settings))
    finally:
        store.close()
    failed: list[str] = []
    for folder in audit_folders(settings.data_dir):  # its own, then each worker process's
        report = verify(folder, keys.audit_key)
        label = "audit log" if folder == settings.data_dir else f"audit log {folder.name}"
        prefix = "" if folder == settings.data_dir else f"{folder.name}: "
        for problem in report.problems:
            click.echo(f"  ✗ {prefix}{problem}")
        if not report.ok:
            failed.append(f"{label} ({len(report.problems)} problem(s))")
            continue
        click.echo(
            f"{label} OK: {report.entries} entries, chain intact up to entry {report.head_seq}"
        )
    if failed:
        raise KeyVaultError(f"{', '.join(failed)} FAILED verification: problems shown above")


@agent_group.command("backup")
@click.option(
    "--data-dir", type=click.Path(path_type=Path), envvar="KEYVAULT_DATA_DIR", help=DATA_DIR_HELP
)
@click.option("--config", type=click.Path(path_type=Path), envvar="KEYVAULT_CONFIG")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="New folder to write the backup to.",
)
@friendly_errors
def backup_cmd(data_dir: Path | None, config: Path | None, out: Path) -> None:
    """A consistent copy of the store, audit log, config and TLS files, safe while the agent runs."""
    from agent.hardening import make_private_tree
    from agent.store.db import sqlite_path

    settings = load_agent_settings(config, data_dir)
    db = sqlite_path(settings.storage_url)
    if db is None:
        raise ConfigError(
            "this agent stores in PostgreSQL: back it up with pg_dump; this command copies SQLite stores"
        )
    if out.exists():
        raise ConfigError(f"{out} already exists; give a new folder")
    out.mkdir(parents=True, mode=0o700)
    old_umask = os.umask(0o077)
    try:
        pages = _backup_into(settings, db, out)
    finally:
        os.umask(old_umask)
        make_private_tree(out)
    click.echo(
        f"backup written to {out} ({pages} pages). The master key is NOT included: keep it separately."
    )


def _backup_into(settings: AgentSettings, db: Path, out: Path) -> int:
    from agent.audit import snapshot
    from agent.audit.checkpoint import LOG_ID_NAME
    from agent.store.db import backup_sqlite
    from agent.workers import audit_folders

    with click.progressbar(length=4, label="backing up") as bar:
        pages = backup_sqlite(db, out / "store.db")
        bar.update(1)
        if (settings.data_dir / "audit.head").exists():
            snapshot(settings.data_dir, out)
        for folder in audit_folders(settings.data_dir)[1:]:  # worker processes' logs
            if (folder / "audit.head").exists():
                (out / folder.name).mkdir(mode=0o700)
                snapshot(folder, out / folder.name)
                if (folder / LOG_ID_NAME).exists():
                    shutil.copy2(folder / LOG_ID_NAME, out / folder.name / LOG_ID_NAME)
        if (settings.data_dir / CONFIG_NAME).exists():
            shutil.copy2(settings.data_dir / CONFIG_NAME, out / CONFIG_NAME)
        bar.update(1)
        if settings.tls_dir.exists():
            shutil.copytree(settings.tls_dir, out / "tls")
        bar.update(2)
    return pages
