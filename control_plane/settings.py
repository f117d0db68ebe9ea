"""Settings of ``keyvault control-plane``: YAML file plus ``KEYVAULT_CP_…`` environment variables.

Without ``redis_url`` the control plane runs *embedded*: an in-process event bus, in-process
rate limits and sweep lock, on the same code paths as production.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.errors import ConfigError
from common.settings import load_settings

CP_ENV_PREFIX = "KEYVAULT_CP_"


class SsoSettings(BaseModel):
    """What the control plane may fetch for single sign-on (``control_plane/outbound.py``)."""

    model_config = ConfigDict(extra="forbid")

    allowed_networks: list[IPvAnyNetwork] = Field(
        default_factory=list,
        max_length=100,
        description="Networks an identity provider may be in although they are not public "
        "(loopback, private, link-local, unique-local…), e.g. `10.20.0.0/16` for an internal "
        "provider. Empty: public addresses only.",
    )
    allow_plain_http: bool = Field(
        False,
        description="Let an issuer use plain http:// to a loopback address that "
        "allowed_networks names (tests and development only).",
    )
    fetch_max_bytes: int = Field(
        256 * 1024,
        ge=1024,
        le=4 * 1024 * 1024,
        description="Largest discovery document or JWKS read from a provider.",
    )
    fetch_timeout_seconds: float = Field(
        10.0, gt=0, le=60, description="Longest a fetch from a provider may take in all."
    )


class ControlPlaneSettings(BaseSettings):
    """Settings of the control plane (every field maps to ``KEYVAULT_CP_<NAME>``)."""

    model_config = SettingsConfigDict(
        env_prefix=CP_ENV_PREFIX, env_nested_delimiter="__", extra="forbid", populate_by_name=True
    )

    database_url: str = Field(
        "sqlite+aiosqlite:///./keyvault-cp.db",
        description="SQLAlchemy async URL: postgresql+psycopg://… or sqlite+aiosqlite:///…",
    )
    redis_url: str | None = Field(
        None, description="redis://host:port/db. Unset: embedded mode (no Redis)."
    )
    redis_prefix: str = Field(
        "keyvault", min_length=1, max_length=64, description="Prefix of Redis keys and channels."
    )
    bind: str = Field("127.0.0.1", description="Address the API listens on.")
    port: int = Field(8443, ge=0, le=65535, description="TCP port of the API.")
    tls_cert_file: Path | None = Field(
        None,
        description="PEM certificate (chain) of the operator API; with tls_key_file the API "
        "serves TLS 1.3 only. `control-plane init --tls-dir DIR` makes one from the service CA.",
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    tls_proxy: bool = Field(
        False,
        description="The API sits behind a TLS-terminating proxy: serve plain HTTP on a "
        "non-loopback bind (refused otherwise) and take the client's address from the "
        "proxy's X-Forwarded-For.",
    )
    gateway_enabled: bool = Field(
        True, description="Serve the agent gateway (enrollment and uplinks) on this replica."
    )
    gateway_bind: str = Field("127.0.0.1", description="Address the agent gateway listens on.")
    gateway_port: int = Field(
        8444, ge=0, le=65535, description="TCP port of the agent gateway (0: any free port)."
    )
    gateway_names: list[str] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1", "::1"],
        min_length=1,
        max_length=50,
        description="DNS names and IP addresses agents use to reach the gateway (its SANs).",
    )
    gateway_ping_seconds: float = Field(
        20.0, gt=0, le=600, description="WebSocket ping interval that detects dead uplinks."
    )
    uplink_heartbeat_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="How often agents send heartbeats (told in welcome); when not set, at most "
        "a third of offline_after_seconds.",
    )
    ca_key_passphrase: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("ca_key_passphrase", "KEYVAULT_CP_CA_KEY_PASSPHRASE"),
        description="Passphrase that encrypts every organisation's CA key at rest.",
    )
    ca_key_file: Path | None = Field(
        None, description="File holding that passphrase instead (first line is used)."
    )
    session_ttl_seconds: int = Field(
        12 * 3600, ge=60, le=30 * 86400, description="Lifetime of a login session."
    )
    invitation_ttl_seconds: int = Field(
        7 * 86400, ge=60, le=30 * 86400, description="Lifetime of an invitation."
    )
    enrollment_ttl_seconds: int = Field(
        3600, ge=10, le=7 * 86400, description="Default lifetime of an enrollment token."
    )
    enrollment_grace_seconds: int = Field(
        600, ge=0, le=86400, description="Window in which a registration may be retried."
    )
    cert_valid_hours: int = Field(
        24, ge=1, le=24 * 90, description="Lifetime of a vault's client certificate."
    )
    cert_overlap_seconds: float = Field(
        1800.0,
        ge=0,
        le=86400,
        description="After a renewal, how long the certificate it replaced may still connect "
        "(an agent that lost the answer comes back and renews again: keep it longer than "
        "cert_renewal_interval_seconds plus the agent's 10-minute renewal retry); then it is "
        "refused.",
    )
    cert_renewal_interval_seconds: float = Field(
        300.0,
        ge=0,
        le=86400,
        description="Least time between two certificate renewals of one vault.",
    )
    cert_expiry_alert_hours: float = Field(
        6.0,
        gt=0,
        le=24 * 90,
        description="Raise certificate_expiring this long before a vault's certificate ends; "
        "when not set, at most a quarter of cert_valid_hours.",
    )
    offline_after_seconds: int = Field(
        90, ge=1, le=86400, description="Heartbeat age after which a vault is offline."
    )
    sweep_interval_seconds: float = Field(
        15.0, gt=0, le=3600, description="How often the offline sweep runs (0 < x)."
    )
    login_max_failures: int = Field(
        5,
        ge=1,
        le=1000,
        description="Failed logins in a row for one account from one address before each "
        "further one makes that pair wait (other addresses are not affected).",
    )
    login_delay_seconds: float = Field(
        1.0, gt=0, le=3600, description="First wait after those failures; it doubles each time."
    )
    login_lockout_seconds: int = Field(
        300, ge=1, le=86400, description="Longest wait one (account, address) pair can get."
    )
    login_source_max_failures: int = Field(
        30,
        ge=1,
        le=100_000,
        description="Failed logins one address may make across all accounts per window.",
    )
    login_source_window_seconds: int = Field(
        60, ge=1, le=86400, description="Window of login_source_max_failures."
    )
    password_workers: int = Field(
        2, ge=1, le=64, description="Threads that hash passwords (argon2id) on each replica."
    )
    password_queue: int = Field(
        8,
        ge=0,
        le=10_000,
        description="Password checks that may wait for a thread; more get 503 + Retry-After.",
    )
    password_per_source: int = Field(
        2, ge=1, le=1000, description="Password checks one address may have running or waiting."
    )
    sso: SsoSettings = Field(
        default_factory=SsoSettings,
        description="Which identity providers the control plane may fetch from.",
    )
    webhook_url: str | None = Field(None, description="Slack-compatible webhook for new alerts.")
    webhook_secret: SecretStr | None = Field(
        None, description="Key of the HMAC-SHA256 signature header on webhook bodies."
    )
    max_body_bytes: int = Field(
        256 * 1024, ge=1024, le=16 * 1024 * 1024, description="Largest request body accepted."
    )
    argon2_time_cost: int = Field(3, ge=1, le=20, description="argon2id passes.")
    argon2_memory_kib: int = Field(
        65536, ge=8, le=4 * 1024 * 1024, description="argon2id memory in KiB (OWASP: >= 19456)."
    )
    background_tasks: bool = Field(True, description="Run the periodic sweep inside this process.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest level logged."
    )

    @model_validator(mode="after")
    def _check(self) -> ControlPlaneSettings:
        if not self.database_url.startswith(("postgresql+psycopg://", "sqlite+aiosqlite://")):
            raise ValueError(
                "database_url must start with postgresql+psycopg:// or sqlite+aiosqlite://"
            )
        if self.webhook_url is not None and not self.webhook_url.startswith(
            ("https://", "http://")
        ):
            raise ValueError("webhook_url must be an http:// or https:// URL")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set tls_cert_file and tls_key_file together")
        if self.ca_key_passphrase is not None and self.ca_key_file is not None:
            raise ValueError("set ca_key_passphrase or ca_key_file, not both")
        # defaults follow the settings they must stay below; explicit values must be coherent
        given = self.model_fields_set
        if "cert_expiry_alert_hours" not in given:
            self.cert_expiry_alert_hours = min(6.0, self.cert_valid_hours / 4)
        elif self.cert_expiry_alert_hours >= self.cert_valid_hours:
            raise ValueError("cert_expiry_alert_hours must be less than cert_valid_hours")
        if "uplink_heartbeat_seconds" not in given:
            self.uplink_heartbeat_seconds = min(30.0, self.offline_after_seconds / 3)
        elif self.uplink_heartbeat_seconds >= self.offline_after_seconds:
            raise ValueError("uplink_heartbeat_seconds must be less than offline_after_seconds")
        for name in self.gateway_names:
            if not 1 <= len(name) <= 253 or not name.isascii() or any(c.isspace() for c in name):
                raise ValueError(f"gateway_names: {name!r} is not a host name or IP address")
        return self

    @property
    def embedded(self) -> bool:
        """True when running without Redis (in-process bus, limits and lock)."""
        return self.redis_url is None

    def ca_passphrase(self) -> bytes | None:
        """The CA-key passphrase from the environment or the key file, or None."""
        if self.ca_key_passphrase is not None:
            return self.ca_key_passphrase.get_secret_value().encode("utf-8")
        if self.ca_key_file is not None:
            try:
                first = self.ca_key_file.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ConfigError(
                    f"ca_key_file {self.ca_key_file} cannot be read: {exc.strerror}"
                ) from exc
            if not first or not first[0].strip():
                raise ConfigError(f"ca_key_file {self.ca_key_file} is empty")
            return first[0].strip().encode("utf-8")
        return None


def load_cp_settings(
    config_file: Path | None = None, overrides: dict[str, Any] | None = None
) -> ControlPlaneSettings:
    """Defaults < YAML file < ``KEYVAULT_CP_…`` environment < overrides, or ConfigError."""
    return load_settings(ControlPlaneSettings, config_file, overrides)
