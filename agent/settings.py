"""The agent's typed settings (``KEYVAULT_…``) and how ``keyvault agent`` loads them.

The generic loader (YAML file < environment < flags, with errors that name the key) and the
model layer live in :mod:`common.typedconf` (standard library only: a running agent never imports
pydantic); this module holds the agent's models and :func:`load_agent_settings`, which finds
``<data-dir>/agent.yaml`` when no ``--config`` is given. A model's ``_check`` method validates it
as a whole once its fields are valid; ``_before`` rewrites its input first.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from pathlib import Path
from typing import Any, ClassVar, Literal

from agent import CONFIG_NAME
from common import globs
from common.typedconf import ENV_PREFIX, AliasChoices, Field, Model, SecretStr, load_settings


class _Section(Model):
    """A section of the settings: unknown keys are refused."""


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


class ReadCacheSettings(_Section):
    """Rendered reads: the hot read's whole response kept for a secret's current version."""

    max_bytes: int = Field(
        4 * 1024 * 1024,
        ge=0,
        le=1024 * 1024 * 1024,
        description="Bytes of rendered read responses (values included, in clear) kept in "
        "memory so that a repeated read skips decryption: about 0.8x the CPU per read "
        "(docs/performance.md). Dropped on every change to the secret, on a KEK rotation and "
        "a rekey, and after ttl_seconds. 0 turns it off: every read decrypts.",
    )
    ttl_seconds: float = Field(
        300.0,
        gt=0,
        le=86_400,
        description="Longest a rendered read is kept, read or not (docs/threat-model.md).",
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

    def _check(self) -> None:
        if self.backoff_base > self.backoff_cap:
            raise ValueError("uplink.backoff_base must not be larger than uplink.backoff_cap")


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

    def _check(self) -> None:
        if not Path(self.argv[0]).is_absolute():
            raise ValueError("argv[0] must be an absolute path to the program")


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

    def _check(self) -> None:
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


# ---------------------------------------------------------------- workload identity (JWT login)

JWT_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,39}$"
_JWT_NAME_RE = re.compile(JWT_NAME_PATTERN)
POLICY_CAPABILITIES = ("read", "list", "write", "rotate", "delete", "admin")
CLAIM_GLOB_MAX = 200  # characters of one bound-claim glob
CLAIM_GLOB_WILDCARDS = 16


def claim_glob_problem(glob: str) -> str | None:
    """What is wrong with a bound-claim glob (``*`` any run, ``?`` one character), or None."""
    if not 1 <= len(glob) <= CLAIM_GLOB_MAX:
        return f"a claim glob is 1-{CLAIM_GLOB_MAX} characters"
    if sum(glob.count(c) for c in "*?") > CLAIM_GLOB_WILDCARDS:
        return f"a claim glob holds at most {CLAIM_GLOB_WILDCARDS} wildcards"
    return None


class JwtIssuer(_Section):
    """A JWT issuer the agent trusts (a Kubernetes cluster, a CI system, any OIDC provider)."""

    name: str = Field(description="Short name roles refer to, e.g. 'cluster' or 'ci'.")
    issuer: str = Field(description="The exact 'iss' claim of its tokens.")
    jwks_file: Path | None = Field(
        None, description="JWKS (JSON Web Key Set) file with the issuer's public keys."
    )
    jwks_url: str | None = Field(
        None, description="https:// URL of the issuer's JWKS (fetched, cached, refreshed)."
    )
    jwks_ca_file: Path | None = Field(
        None,
        description="CA bundle (PEM) that signs jwks_url's certificate (e.g. the cluster CA). "
        "Default: the system's trust store.",
    )
    audiences: list[str] = Field(
        min_length=1, description="Accepted 'aud' values; a token must name at least one."
    )
    max_clock_skew_s: float = Field(
        60, ge=0, le=300, description="Seconds of clock difference allowed on exp, nbf and iat."
    )
    jwks_refresh_s: float = Field(
        300, ge=10, le=86400, description="Seconds between JWKS refreshes."
    )

    def _check(self) -> None:
        if not _JWT_NAME_RE.match(self.name):
            raise ValueError(f"issuer name {self.name!r} must match {JWT_NAME_PATTERN}")
        if (self.jwks_file is None) == (self.jwks_url is None):
            raise ValueError(f"issuer {self.name!r}: set exactly one of jwks_file and jwks_url")
        if self.jwks_url is not None and not self.jwks_url.startswith("https://"):
            raise ValueError(f"issuer {self.name!r}: jwks_url must be an https:// URL")


class JwtRole(_Section):
    """What a valid JWT from one issuer may become: claims to match, and the token it gets."""

    name: str = Field(description="The role a login names (POST /api/v1/auth/jwt).")
    issuer: str = Field(description="Name of the issuer (auth.jwt.issuers[].name) it trusts.")
    bound_claims: dict[str, str | list[str]] = Field(
        default_factory=dict,
        description="Claims the token must hold: claim -> glob or list of globs ('*' any run "
        "of characters, '?' one), e.g. {repository: 'acme/api', ref: 'refs/heads/*'}.",
    )
    bound_subject: str | None = Field(
        None,
        description="Glob the 'sub' claim must match, e.g. 'system:serviceaccount:payments:api'.",
    )
    policy: dict[str, list[str]] = Field(
        description="The minted token's rights: capability -> name globs, e.g. "
        "{read: ['prod/payments/**']}."
    )
    ttl_s: int = Field(900, ge=1, description="Seconds the minted token lives (<= max_ttl_s).")

    def _check(self) -> None:
        if not _JWT_NAME_RE.match(self.name):
            raise ValueError(f"role name {self.name!r} must match {JWT_NAME_PATTERN}")
        if not self.bound_claims and self.bound_subject is None:
            raise ValueError(
                f"role {self.name!r} must bind the subject or at least one claim; "
                "otherwise any token of its issuer would log in"
            )
        if not self.policy:
            raise ValueError(f"role {self.name!r}: policy must grant at least one capability")
        for cap, names in self.policy.items():
            if cap not in POLICY_CAPABILITIES:
                raise ValueError(
                    f"role {self.name!r}: unknown capability {cap!r}; use "
                    + ", ".join(POLICY_CAPABILITIES)
                )
            if not names:
                raise ValueError(f"role {self.name!r}: policy.{cap} lists no name globs")
            for glob in names:
                found = globs.problem(glob)
                if found is not None:
                    raise ValueError(f"role {self.name!r}: policy.{cap} {glob!r}: {found}")
        claim_globs = [self.bound_subject] if self.bound_subject is not None else []
        for value in self.bound_claims.values():
            claim_globs.extend([value] if isinstance(value, str) else value)
        for glob in claim_globs:
            found = claim_glob_problem(glob)
            if found is not None:
                raise ValueError(f"role {self.name!r}: {glob!r}: {found}")


class JwtSettings(_Section):
    """Workload identity: issuers whose JWTs the agent trusts and the roles they log in as."""

    issuers: list[JwtIssuer] = Field(default_factory=list, description="Trusted JWT issuers.")
    roles: list[JwtRole] = Field(default_factory=list, description="Login roles.")
    max_ttl_s: int = Field(
        3600, ge=60, le=86400, description="Longest life of a token minted by a JWT login."
    )

    def _check(self) -> None:
        issuers = [i.name for i in self.issuers]
        if len(set(issuers)) != len(issuers):
            raise ValueError("auth.jwt.issuers: names must be unique")
        roles = [r.name for r in self.roles]
        if len(set(roles)) != len(roles):
            raise ValueError("auth.jwt.roles: names must be unique")
        for role in self.roles:
            if role.issuer not in issuers:
                raise ValueError(
                    f"role {role.name!r} names issuer {role.issuer!r}, which is not in "
                    "auth.jwt.issuers"
                )
            if role.ttl_s > self.max_ttl_s:
                raise ValueError(
                    f"role {role.name!r}: ttl_s {role.ttl_s} is above auth.jwt.max_ttl_s "
                    f"({self.max_ttl_s})"
                )


class AuthSettings(_Section):
    """Ways to log in besides a bearer token made by an admin."""

    jwt: JwtSettings = Field(default_factory=JwtSettings)


# ---------------------------------------------------------------- webhooks on change


class WebhookSettings(_Section):
    """A URL told (signed, never a value) when a secret whose name matches changes."""

    url: str = Field(description="https:// URL (http:// only to loopback) that receives the POST.")
    secret_env: str | None = Field(
        None, description="Environment variable holding the signing secret."
    )
    secret_file: Path | None = Field(None, description="File holding the signing secret.")
    names: list[str] = Field(
        default_factory=lambda: ["**"], description="Name globs of the secrets it hears about."
    )
    timeout_s: float = Field(5, gt=0, le=60, description="Seconds one delivery attempt may take.")
    retries: int = Field(5, ge=0, le=10, description="Retries after a failed delivery (backoff).")

    def _check(self) -> None:
        if (self.secret_env is None) == (self.secret_file is None):
            raise ValueError(f"webhook {self.url!r}: set exactly one of secret_env and secret_file")
        if not (self.url.startswith("https://") or _loopback_http(self.url)):
            raise ValueError(
                f"webhook {self.url!r}: use an https:// URL (http:// only to a loopback address)"
            )
        for glob in self.names:
            found = globs.problem(glob)
            if found is not None:
                raise ValueError(f"webhook {self.url!r}: names {glob!r}: {found}")


def _loopback_http(url: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.scheme == "http" and _is_loopback(parts.hostname or "")


# ---------------------------------------------------------------- templates (issue 17)

TEMPLATE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"


class SignalReload(_Section):
    """Signal a process (its pid read from a file) after a template's file changed."""

    pid_file: Path = Field(description="File holding the pid of the process to signal.")
    signal: str = Field("SIGHUP", description="Signal name, e.g. SIGHUP, SIGUSR1.")

    def _check(self) -> None:
        import signal as _signal

        if self.signal not in _signal.Signals.__members__:
            raise ValueError(f"signal {self.signal!r} is not a signal name (e.g. SIGHUP)")


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

    def _check(self) -> None:
        if (self.command is None) == (self.signal is None):
            raise ValueError("on_change needs exactly one of command or signal")
        if self.command is not None and not Path(self.command[0]).is_absolute():
            raise ValueError("on_change.command[0] must be an absolute path to the program")


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

    @classmethod
    def _before(cls, data: dict[str, Any]) -> dict[str, Any]:
        if isinstance(data.get("mode"), str):
            try:
                data = {**data, "mode": int(data["mode"], 8)}
            except ValueError:
                raise ValueError(f"mode {data['mode']!r} must be octal, e.g. '0640'") from None
        return data

    def _check(self) -> None:
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

    @property
    def label(self) -> str:
        """The template's name (always set after validation)."""
        return self.name or "template"


def _check_ownership(owner: str | None, group: str | None) -> None:
    """An owner or group the agent can set (``agent.platform.check_ownership``)."""
    from agent.platform import check_ownership

    check_ownership(owner, group)


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


class AgentSettings(Model):
    """Settings of ``keyvault agent``."""

    model_config: ClassVar[dict[str, Any]] = {"env_prefix": ENV_PREFIX}

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
    master_key_credential: str | None = Field(
        None,
        validation_alias=AliasChoices("master_key_credential", "KEYVAULT_MASTER_KEY_CREDENTIAL"),
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",
        description="Name of a systemd credential holding the master key file "
        "($CREDENTIALS_DIRECTORY/<name>, from LoadCredential= in the unit); used instead of "
        "master_key_file when set.",
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
    read_cache: ReadCacheSettings = Field(default_factory=ReadCacheSettings)
    replica_name: str | None = Field(
        None,
        validation_alias=AliasChoices("replica_name", "KEYVAULT_REPLICA_NAME", "POD_NAME"),
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,252}$",
        description="This replica's stable name on a shared PostgreSQL store (the StatefulSet pod "
        "name); its audit log is bound to it, so a replica whose log is gone is noticed. "
        "Default: the host name and data folder.",
    )
    workers: int = Field(
        1,
        ge=1,
        le=16,
        description="Serving processes on the same port (SO_REUSEPORT, Linux only). 1: one "
        "process, as always. More: reads use more than one core; each worker writes its own "
        "audit log (audit-w<k>/) and only worker 0 runs the uplink, scheduler, templates and "
        "webhooks. On a read-heavy host with two or more cores, 2 serves about 1.5x the reads "
        "of one process, for about 190 MiB resident in all (the supervisor and two workers) "
        "against about 60 (docs/performance.md). KEK rotation works through any worker; a "
        "rekey (new master key) needs workers: 1 while it runs.",
    )
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
    auth: AuthSettings = Field(
        default_factory=AuthSettings,
        description="Workload identity: JWT login (docs/workloads.md).",
    )
    webhooks: list[WebhookSettings] = Field(
        default_factory=list,
        description="URLs told (signed) when secrets change (docs/workloads.md).",
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

    def _check(self) -> None:
        if self.master_key_file is not None and self.master_passphrase is not None:
            raise ValueError("set master_key_file or master_passphrase, not both")
        if self.master_key_credential is not None and self.master_passphrase is not None:
            raise ValueError("set master_key_credential or master_passphrase, not both")
        if not self.tls.enabled and not _is_loopback(self.bind):
            raise ValueError(
                f"tls.enabled=false is only allowed when bind is a loopback address; bind is {self.bind!r}"
            )
        explicit = "client_cert" in self.tls.model_fields_set
        if self.tls.client_cert == "required" and not self.tls.enabled and explicit:
            raise ValueError("tls.client_cert=required needs tls.enabled=true")
        if self.workers > 1 and not sys.platform.startswith("linux"):
            raise ValueError(
                f"workers is {self.workers} but more than one worker needs Linux (the workers "
                "share the port with SO_REUSEPORT); set workers: 1 on this platform"
            )
        self._check_templates()

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
