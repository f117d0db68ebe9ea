"""``keyvault agent init``: a data folder with keystore, store, TLS files, config and an admin token."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from agent import CONFIG_NAME, platform
from agent.auth import Policy, TokenService
from agent.crypto import KDF_DEFAULT_ITERATIONS, KeySource, generate_key_file
from agent.keys import KeyManager
from agent.store.db import Store
from common.errors import ConfigError
from common.pki import CertificateAuthority
from common.tls import write_pem


@dataclass(frozen=True)
class InitOptions:
    """What ``init`` was asked to do."""

    data_dir: Path
    key_file: Path | None = None
    passphrase: str | None = None
    iterations: int = KDF_DEFAULT_ITERATIONS
    hostnames: tuple[str, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    client_cert_mode: str = "required"
    storage_url: str | None = None
    bind: str = "127.0.0.1"
    port: int = 8080
    #: join the vault already in a shared (PostgreSQL) store instead of creating one: another
    #: replica of the same agent made it; no keystore and no admin token are created
    join: bool = False
    #: the store URL came from ``KEYVAULT_STORAGE__URL`` and stays there: agent.yaml gets the URL
    #: without its password (the agent reads the full one from the environment at every start)
    storage_url_from_env: bool = False


@dataclass(frozen=True, repr=False)
class InitResult:
    """What ``init`` made; ``admin_token`` is shown once and never stored in clear ("" when
    joining: the first replica's token serves every replica)."""

    vault_id: str
    config_file: Path
    key_file: Path | None
    admin_token: str
    ca_file: Path
    client_cert: Path | None
    client_key: Path | None

    def __repr__(self) -> str:
        return f"InitResult(vault_id={self.vault_id!r}, config_file={self.config_file!r})"


def default_key_dir() -> Path:
    """Where ``init`` puts a new master key by default: the user's config folder, never the
    data folder (a copy of the data folder must not carry the key that decrypts it)."""
    override = os.environ.get("KEYVAULT_KEYS_DIR")
    if override:
        return Path(override)
    if platform.WINDOWS:
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "keyvault" / "keys"


@contextlib.contextmanager
def _private_files() -> Any:
    """Every file made inside is 0600 and every folder 0700 (umask 077), then the old umask."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def initialise(opts: InitOptions) -> InitResult:
    """Create everything a new agent needs; refuses to touch an initialised folder."""
    with _private_files():
        return _initialise(opts)


def _initialise(opts: InitOptions) -> InitResult:
    data = opts.data_dir.resolve()
    if (data / CONFIG_NAME).exists():
        raise ConfigError(
            f"{data} already holds an agent ({CONFIG_NAME} exists); refusing to overwrite it"
        )
    if (opts.tls_cert is None) != (opts.tls_key is None):
        raise ConfigError(
            "give --tls-cert and --tls-key together, or neither to make a self-signed setup"
        )
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(data, 0o700)
    if opts.join and (opts.storage_url is None or opts.storage_url.startswith("sqlite")):
        raise ConfigError(
            "--join needs --storage-url of the PostgreSQL store the other replicas share"
        )
    vault_id = "vlt_" + uuid.uuid4().hex[:20]
    source, key_file = _key_source(opts, data, vault_id)
    storage_url = opts.storage_url or f"sqlite:///{data / 'store.db'}"
    store = Store(storage_url)
    try:
        store.check()
        store.migrate()
        if opts.join:
            # the same master key must open the existing keystore, or this replica is refused
            vault_id, token = KeyManager.unlock(store, source).vault_id, ""
        else:
            keys = KeyManager.initialise(store, vault_id, source, iterations=opts.iterations)
            token, _ = TokenService(store, keys.rows).create_sync("initial admin", Policy.root())
    finally:
        store.close()
    tls = _tls_files(opts, data)
    config = _config(opts, data, key_file, storage_url, tls)
    config_file = data / CONFIG_NAME
    config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    os.chmod(config_file, 0o600)
    return InitResult(
        vault_id,
        config_file,
        key_file,
        token,
        tls["ca"],
        tls.get("client_cert"),
        tls.get("client_key"),
    )


def _key_source(opts: InitOptions, data: Path, vault_id: str) -> tuple[KeySource, Path | None]:
    if opts.passphrase is not None:
        if opts.key_file is not None:
            raise ConfigError("give --key-file or --passphrase, not both")
        return KeySource.from_passphrase(opts.passphrase), None
    if opts.join and opts.key_file is None:
        raise ConfigError("--join needs the vault's master key: give --key-file")
    key_file = (opts.key_file or default_key_dir() / f"{vault_id}.key").resolve()
    if opts.join and not key_file.exists():
        raise ConfigError(f"--join needs the vault's master key; {key_file} does not exist")
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        generate_key_file(key_file)
    return KeySource.from_key_file(key_file), key_file


def _tls_files(opts: InitOptions, data: Path) -> dict[str, Path]:
    tls_dir = data / "tls"
    tls_dir.mkdir(exist_ok=True, mode=0o700)
    if opts.tls_cert and opts.tls_key:
        if opts.client_ca is None and opts.client_cert_mode != "none":
            raise ConfigError(
                "with your own --tls-cert, also give --client-ca (or --client-cert none)"
            )
        return {
            "cert": opts.tls_cert.resolve(),
            "key": opts.tls_key.resolve(),
            "ca": (opts.client_ca or opts.tls_cert).resolve(),
        }
    ca = CertificateAuthority.create(f"KeyVault agent CA {socket.gethostname()}")
    hosts = ["localhost", socket.gethostname(), *opts.hostnames]
    cert, key = ca.issue_server_cert(list(dict.fromkeys(hosts)))
    client_cert, client_key = ca.issue_client_cert("keyvault-admin", valid_for=timedelta(days=365))
    files = {
        "ca": write_pem(tls_dir / "ca.crt", ca.cert_pem()),
        "ca_key": write_pem(tls_dir / "ca.key", ca.key_pem(), private=True),
        "cert": write_pem(tls_dir / "server.crt", cert),
        "key": write_pem(tls_dir / "server.key", key, private=True),
        "client_cert": write_pem(tls_dir / "client.crt", client_cert),
        "client_key": write_pem(tls_dir / "client.key", client_key, private=True),
    }
    return files


def _config(
    opts: InitOptions, data: Path, key_file: Path | None, storage_url: str, tls: dict[str, Path]
) -> dict[str, Any]:
    config: dict[str, Any] = {"data_dir": str(data)}
    if key_file is not None:
        config["master_key_file"] = str(key_file)
    config.update(
        {
            "bind": opts.bind,
            "port": opts.port,
            "tls": {
                "cert_file": str(tls["cert"]),
                "key_file": str(tls["key"]),
                "client_ca_file": str(tls["ca"]),
                "client_cert": opts.client_cert_mode,
            },
            "storage": {
                "url": without_password(storage_url) if opts.storage_url_from_env else storage_url
            },
        }
    )
    return config


def without_password(url: str) -> str:
    """``url`` with its password removed (user, host, database and options kept)."""
    from agent.store.db import replace_password

    return replace_password(url, None)
