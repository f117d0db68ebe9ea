"""The agent's typed settings (``KEYVAULT_…``) and how ``keyvault agent`` loads them.

The generic loader (YAML file < environment < flags, with errors that name the key) lives in
:mod:`common.settings`; this module holds the agent's models and :func:`load_agent_settings`,
which finds ``<data-dir>/agent.yaml`` when no ``--config`` is given.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agent import CONFIG_NAME
from common import globs
from common.settings import ENV_PREFIX, load_settings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TLSSettings(_Section):
    """How the agent's API is served."""

    enabled: bool = Field(
        True, description="Serve HTTPS (TLS 1.3 only). false is allowed only on loopback."
    )
    cert_file: Path | None = Field(
        None, description="Server certificate (PEM). Default: <data_dir>/tls/server.crt"
    )
    key_file: Path | None = Field(
        None, description="Server private key (PEM). Default: <data_dir>/tls/server.key"
    )
    client_ca_file: Path | None = Field(
        None, description="CA that signs client certificates. Default: <data_dir>/tls/ca.crt"
    )
    client_cert: Literal["required", "optional", "none"] = Field(
        "required",
        description="Whether clients must present a certificate from client_ca_file. "
        "'optional' lets a bearer token alone reach secrets: an explicit choice, logged at start.",
    )


class StorageSettings(_Section):
    """Where encrypted secrets are kept."""

    url: str | None = Field(
        None,
        description="SQLAlchemy URL. Default: SQLite at <data_dir>/store.db. "
        "PostgreSQL: postgresql+psycopg://user@host/db",
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL", description="SQLite durability. FULL survives power loss; NORMAL survives crashes."
    )


class UplinkSettings(_Section):
    """The agent's link to the control plane (``keyvault agent enroll`` turns it on)."""

    heartbeat_interval: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Seconds between heartbeats (the control plane's own interval wins if shorter).",
    )
    backoff_base: float = Field(
        0.5, gt=0, le=60, description="First reconnect delay bound in seconds (full jitter)."
    )
    backoff_cap: float = Field(
        60.0, gt=0, le=3600, description="Largest reconnect delay bound in seconds."
    )
    batch_size: int = Field(
        500, ge=1, le=500, description="Most events in one batch sent to the control plane."
    )
    renew_at: float = Field(
        0.667,
        gt=0.1,
        lt=0.95,
        description="Fraction of its certificate's life after which the agent renews it.",
    )
    enroll_poll_interval: float = Field(
        3.0,
        gt=0,
        le=300,
        description="Seconds between checks for an enrollment made while the agent runs.",
    )
    ack_timeout: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Seconds to wait for the control plane to acknowledge a batch before reconnecting.",
    )

    trace_file: Path | None = Field(
        None,
        description="Append every uplink frame, both directions, to this JSON-lines file (for "
        "debugging and audits; frames never hold a secret value, key, token or name).",
    )

    @model_validator(mode="after")
    def _check(self) -> UplinkSettings:
        if self.backoff_base > self.backoff_cap:
            raise ValueError("uplink.backoff_base must not be larger than uplink.backoff_cap")
        return self


ROTATION_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,39}$"
_ROTATION_NAME_RE = re.compile(ROTATION_NAME_PATTERN)


class PostgresConnection(_Section):
    """A PostgreSQL server whose role passwords the ``postgres`` rotator changes."""

    dsn_file: Path = Field(
        description="File holding the libpq DSN (URL or key=value) of an admin allowed to "
        "ALTER ROLE; read at each use, so it can be replaced without a restart."
    )
    host: str | None = Field(
        None, description="Host for the verification login. Default: the DSN's host."
    )
    port: int | None = Field(
        None, ge=1, le=65535, description="Port for the verification login. Default: the DSN's."
    )
    dbname: str | None = Field(
        None, description="Database for the verification login. Default: the DSN's."
    )
    roles: list[str] = Field(
        default_factory=list,
        description="The only roles a policy may rotate through this connection (role and "
        "alternate_role). A policy naming any other role is refused and alerted; the control "
        "plane cannot widen this list. Empty: no role may be rotated.",
    )


class CommandHook(_Section):
    """An external program the ``command`` rotator runs with the new value on standard input."""

    argv: list[str] = Field(
        min_length=1,
        description="Program and arguments; the program is an absolute path. Never holds a value.",
    )
    timeout_seconds: float = Field(
        30, ge=1, le=600, description="Seconds before the program's process group is killed."
    )

    @model_validator(mode="after")
    def _check(self) -> CommandHook:
        if not Path(self.argv[0]).is_absolute():
            raise ValueError("argv[0] must be an absolute path to the program")
        return self


class RotationSettings(_Section):
    """Automatic rotation: timing, and the connections and commands policies refer to by name."""

    jitter_fraction: float = Field(
        0.1, ge=0, le=0.5, description="Due dates move by up to this fraction of the interval."
    )
    scan_interval_seconds: float = Field(
        60, gt=0, le=3600, description="Seconds between scheduler passes."
    )
    retry_base_seconds: float = Field(
        60, gt=0, le=86400, description="First retry delay after a failed rotation (doubles)."
    )
    postgres: dict[str, PostgresConnection] = Field(
        default_factory=dict,
        description="PostgreSQL connections by name (a policy's rotator.settings.connection).",
    )
    commands: dict[str, CommandHook] = Field(
        default_factory=dict,
        description="Rotation commands by name (a policy's rotator.settings.command); the only "
        "hooks a policy may run: a policy naming another is refused and alerted.",
    )
    protected_names: list[str] = Field(
        default_factory=list,
        description="Name globs of secrets no remote policy or command may touch (rotate); the "
        "local API still can. Example: ['prod/root/**'].",
    )
    evaluation_budget_seconds: float = Field(
        10,
        gt=0,
        le=600,
        description="Most seconds one pass may spend matching policies to "
        "secrets; a longer pass is stopped, skipped and alerted.",
    )

    @model_validator(mode="after")
    def _check(self) -> RotationSettings:
        for glob in self.protected_names:
            found = globs.problem(glob)
            if found is not None:
                raise ValueError(f"rotation.protected_names {glob!r}: {found}")
        for kind, names in (("postgres", self.postgres), ("commands", self.commands)):
            for name in names:
                if not _ROTATION_NAME_RE.match(name):
                    raise ValueError(
                        f"rotation.{kind} name {name!r} must match {ROTATION_NAME_PATTERN}"
                    )
        return self


# ---------------------------------------------------------------- templates (issue 17)

TEMPLATE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"


class SignalReload(_Section):
    """Signal a process (its pid read from a file) after a template's file changed."""

    pid_file: Path = Field(description="File holding the pid of the process to signal.")
    signal: str = Field("SIGHUP", description="Signal name, e.g. SIGHUP, SIGUSR1.")

    @model_validator(mode="after")
    def _check(self) -> SignalReload:
        import signal as _signal

        if self.signal not in _signal.Signals.__members__:
            raise ValueError(f"signal {self.signal!r} is not a signal name (e.g. SIGHUP)")
        return self


class TemplateReload(_Section):
    """What runs once each time a template's file is replaced: a command or a signal."""

    command: list[str] | None = Field(
        None,
        min_length=1,
        description="Program and arguments (absolute program path; no shell). Its output is "
        "logged, never a secret value.",
    )
    signal: SignalReload | None = Field(None, description="Signal a process instead.")
    timeout_seconds: float = Field(
        30, gt=0, le=600, description="Seconds before the command's process group is killed."
    )

    @model_validator(mode="after")
    def _check(self) -> TemplateReload:
        if (self.command is None) == (self.signal is None):
            raise ValueError("on_change needs exactly one of command or signal")
        if self.command is not None and not Path(self.command[0]).is_absolute():
            raise ValueError("on_change.command[0] must be an absolute path to the program")
        return self


class TemplateSpec(_Section):
    """One file the agent renders from a template and keeps up to date (docs/workloads.md)."""

    name: str | None = Field(
        None,
        pattern=TEMPLATE_NAME_PATTERN,
        description="Name in logs and the audit log (actor template:<name>). Default: the "
        "destination's file name.",
    )
    source: Path | None = Field(
        None, description="Template file, absolute path (Jinja2, sandboxed; read at start)."
    )
    inline: str | None = Field(None, description="The template text itself, instead of source.")
    destination: Path = Field(description="Absolute path of the rendered file.")
    mode: int = Field(
        0o600, ge=0, le=0o777, description="File mode in octal, e.g. '0640' (default 0600 = 384)."
    )
    owner: str | None = Field(None, description="User to own the file (the agent must be root).")
    group: str | None = Field(
        None, description="Group of the file (the agent must be root or in that group)."
    )
    on_change: TemplateReload | None = Field(
        None,
        description="After the file changed: {command: [argv…], timeout_seconds} or {signal: "
        "{pid_file, signal}} (docs/workloads.md).",
    )
    min_interval_ms: int = Field(
        200,
        ge=0,
        le=600_000,
        description="Least time between two renders; changes inside it are coalesced.",
    )
    error_on_missing: bool = Field(
        True,
        description="A missing secret fails the render (keeping the last good file); false "
        "renders it as an empty string.",
    )

    @model_validator(mode="before")
    @classmethod
    def _octal_mode(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("mode"), str):
            try:
                data = {**data, "mode": int(data["mode"], 8)}
            except ValueError:
                raise ValueError(f"mode {data['mode']!r} must be octal, e.g. '0640'") from None
        return data

    @model_validator(mode="after")
    def _check(self) -> TemplateSpec:
        if (self.source is None) == (self.inline is None):
            raise ValueError("a template needs exactly one of source or inline")
        if not self.destination.is_absolute():
            raise ValueError(f"destination {self.destination} must be an absolute path")
        if self.source is not None and not self.source.is_absolute():
            raise ValueError(f"source {self.source} must be an absolute path")
        if self.mode & 0o002:
            raise ValueError(f"mode {self.mode:04o} would let anyone write the file")
        if self.name is None:
            self.name = re.sub(r"[^a-z0-9_.-]", "-", self.destination.name.lower()).lstrip("._-")
            self.name = (self.name or "template")[:63]
        _check_ownership(self.owner, self.group)
        return self

    @property
    def label(self) -> str:
        """The template's name (always set after validation)."""
        return self.name or "template"


def _check_ownership(owner: str | None, group: str | None) -> None:
    """An owner or group the agent can set: it must exist, and only root may give a file away."""
    import grp
    import pwd

    root = os.geteuid() == 0
    if owner is not None:
        try:
            uid = pwd.getpwuid(int(owner)).pw_uid if owner.isdigit() else pwd.getpwnam(owner).pw_uid
        except KeyError:
            raise ValueError(f"owner {owner!r} is not a user on this machine") from None
        if uid != os.geteuid() and not root:
            raise ValueError(
                f"owner {owner!r}: only an agent running as root can give a file to another "
                "user; remove owner or run the agent as root"
            )
    if group is not None:
        try:
            gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ValueError(f"group {group!r} is not a group on this machine") from None
        if not root and gid not in os.getgroups() and gid != os.getegid():
            raise ValueError(
                f"group {group!r}: the agent is not root and not in that group; remove group, "
                "add the agent's user to it or run the agent as root"
            )


class TemplateLimits(_Section):
    """Agent-wide bounds on templates (a template never holds the agent up)."""

    max_templates: int = Field(500, ge=1, le=10_000, description="Most templates in templates.")
    max_source_bytes: int = Field(
        256 * 1024, ge=64, le=16 * 1024 * 1024, description="Largest template text."
    )
    max_rendered_bytes: int = Field(
        1024 * 1024, ge=64, le=64 * 1024 * 1024, description="Largest rendered file."
    )
    render_budget_seconds: float = Field(
        2.0, gt=0, le=60, description="Most seconds one render may take before it is stopped."
    )


class AgentSettings(BaseSettings):
    """Settings of ``keyvault agent``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", populate_by_name=True
    )

    data_dir: Path = Field(
        Path("./keyvault-data"),
        description="Folder holding the store, keystore, TLS files and audit log.",
    )
    master_key_file: Path | None = Field(
        None,
        validation_alias=AliasChoices(
            "master_key_file", "KEYVAULT_MASTER_KEY_FILE", "VAULT_MASTER_KEY_FILE"
        ),
        description="32-byte master key file. Either this or master_passphrase.",
    )
    master_passphrase: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("master_passphrase", "KEYVAULT_MASTER_PASSPHRASE"),
        description="Passphrase stretched with PBKDF2 (prefer the environment to a file).",
    )
    kdf_iterations: int = Field(
        600_000, ge=100_000, description="PBKDF2 iterations for a new passphrase keystore."
    )
    bind: str = Field("127.0.0.1", description="Address the API listens on.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port of the API (0 picks a free one).")
    tls: TLSSettings = Field(default_factory=TLSSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    audit_fsync: bool = Field(False, description="fsync the audit log after every entry.")
    max_body_bytes: int = Field(
        256 * 1024, ge=1024, le=16 * 1024 * 1024, description="Largest request body accepted."
    )
    max_value_bytes: int = Field(
        64 * 1024, ge=16, le=8 * 1024 * 1024, description="Largest secret value accepted."
    )
    shutdown_timeout: float = Field(
        10.0, gt=0, le=300, description="Seconds allowed for in-flight requests at SIGTERM."
    )
    log_format: Literal["text", "json"] = Field("text", description="Log line format.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest level logged."
    )
    control_plane_url: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "control_plane_url", "KEYVAULT_CONTROL_PLANE_URL", "CONTROL_PLANE_URL"
        ),
        description="Control plane to enroll with and report to.",
    )
    uplink: UplinkSettings = Field(default_factory=UplinkSettings)
    rotation: RotationSettings = Field(
        default_factory=RotationSettings,
        description="Automatic secret rotation (issue 5).",
    )
    templates: list[TemplateSpec] = Field(
        default_factory=list,
        description="Files rendered from templates and kept up to date (docs/workloads.md).",
    )
    template_limits: TemplateLimits = Field(default_factory=TemplateLimits)
    metadata_key_file: Path | None = Field(
        None,
        description="The organisation's metadata key (seals secret names for the control "
        "plane). Default: <data_dir>/metadata.key when that file exists; without a key the "
        "control plane sees opaque ids only.",
    )

    @model_validator(mode="after")
    def _check(self) -> AgentSettings:
        if self.master_key_file is not None and self.master_passphrase is not None:
            raise ValueError("set master_key_file or master_passphrase, not both")
        if not self.tls.enabled and not _is_loopback(self.bind):
            raise ValueError(
                f"tls.enabled=false is only allowed when bind is a loopback address; bind is {self.bind!r}"
            )
        explicit = "client_cert" in self.tls.model_fields_set
        if self.tls.client_cert == "required" and not self.tls.enabled and explicit:
            raise ValueError("tls.client_cert=required needs tls.enabled=true")
        self._check_templates()
        return self

    def _check_templates(self) -> None:
        if len(self.templates) > self.template_limits.max_templates:
            raise ValueError(
                f"{len(self.templates)} templates; template_limits.max_templates is "
                f"{self.template_limits.max_templates}"
            )
        seen: dict[object, str] = {}
        for spec in self.templates:
            for key, what in ((spec.label, "name"), (spec.destination, "destination")):
                if key in seen:
                    hint = " (give each a distinct name:)" if what == "name" else ""
                    raise ValueError(f"two templates share the {what} {key}{hint}")
                seen[key] = what

    # Derived paths --------------------------------------------------------
    @property
    def tls_dir(self) -> Path:
        """Folder of the agent's own TLS files."""
        return self.data_dir / "tls"

    @property
    def cert_path(self) -> Path:
        """Server certificate in force."""
        return self.tls.cert_file or self.tls_dir / "server.crt"

    @property
    def key_path(self) -> Path:
        """Server key in force."""
        return self.tls.key_file or self.tls_dir / "server.key"

    @property
    def client_ca_path(self) -> Path:
        """Client CA in force."""
        return self.tls.client_ca_file or self.tls_dir / "ca.crt"

    @property
    def uplink_dir(self) -> Path:
        """Folder of the enrollment state and the uplink's key and certificates."""
        return self.data_dir / "uplink"

    @property
    def metadata_key_path(self) -> Path | None:
        """The metadata key file in force: the configured one, else the default if present."""
        if self.metadata_key_file is not None:
            return self.metadata_key_file
        default = self.data_dir / "metadata.key"
        return default if default.exists() else None

    @property
    def storage_url(self) -> str:
        """SQLAlchemy URL of the store."""
        return self.storage.url or f"sqlite:///{(self.data_dir / 'store.db').resolve()}"

    @property
    def base_url(self) -> str:
        """How a local client reaches the API."""
        host = self.bind if self.bind not in ("0.0.0.0", "::") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.tls.enabled else 'http'}://{host}:{self.port}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_agent_settings(
    config: Path | None, data_dir: Path | None, **overrides: Any
) -> AgentSettings:
    """Settings from --config, else <data-dir>/agent.yaml, then the environment and flags."""
    if config is None:
        folder = data_dir or Path(os.environ.get("KEYVAULT_DATA_DIR", "keyvault-data"))
        candidate = folder / CONFIG_NAME
        config = candidate if candidate.exists() else None
        if data_dir is not None:
            overrides.setdefault("data_dir", data_dir)
    return load_settings(AgentSettings, config, overrides)
