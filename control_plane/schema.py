"""SQLAlchemy Core tables of the control plane (metadata only; never a secret)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()
TS = sa.DateTime(timezone=True)


def _id() -> sa.Column[str]:
    return sa.Column("id", sa.String(40), primary_key=True)


def _org() -> sa.Column[str]:
    return sa.Column("org_id", sa.String(40), sa.ForeignKey("cp_orgs.id"), nullable=False)


orgs = sa.Table(
    "cp_orgs",
    metadata,
    _id(),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("metadata_key_fingerprint", sa.String(100)),
    sa.Column("created_at", TS, nullable=False),
)

users = sa.Table(
    "cp_users",
    metadata,
    _id(),
    _org(),
    sa.Column("email", sa.String(320), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(200), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", TS, nullable=False),
)

sessions = sa.Table(
    "cp_sessions",
    metadata,
    _id(),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("user_id", sa.String(40), sa.ForeignKey("cp_users.id"), nullable=False),
    _org(),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("expires_at", TS, nullable=False),
    sa.Column("revoked_at", TS),
)

invitations = sa.Table(
    "cp_invitations",
    metadata,
    _id(),
    _org(),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_by", sa.String(40), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("expires_at", TS, nullable=False),
    sa.Column("accepted_at", TS),
)

password_resets = sa.Table(
    "cp_password_resets",
    metadata,
    _id(),
    _org(),
    sa.Column("user_id", sa.String(40), sa.ForeignKey("cp_users.id"), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_by", sa.String(40), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("expires_at", TS, nullable=False),
    sa.Column("used_at", TS),
)

sso = sa.Table(
    "cp_sso",
    metadata,
    sa.Column("org_id", sa.String(40), sa.ForeignKey("cp_orgs.id"), primary_key=True),
    sa.Column("issuer", sa.String(500), nullable=False),
    sa.Column("client_id", sa.String(200), nullable=False),
    sa.Column("native_client_secret", sa.String(200)),
    sa.Column("groups_claim", sa.String(100), nullable=False),
    sa.Column("role_map", sa.Text, nullable=False),
    sa.Column("require_sso", sa.Boolean, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)

# Single sign-ons in progress: the nonce the control plane issued for each, single-use.
sso_logins = sa.Table(
    "cp_sso_logins",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),  # SHA-256 of the login id
    _org(),
    sa.Column("nonce", sa.String(64), nullable=False),
    sa.Column("source", sa.String(32), nullable=False),  # hash of the starting address
    sa.Column("expires_at", TS, nullable=False, index=True),
)

service_ca = sa.Table(
    "cp_service_ca",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),  # always 1
    sa.Column("cert_pem", sa.Text, nullable=False),
    sa.Column("key_pem_encrypted", sa.Text, nullable=False),
    sa.Column("pin", sa.String(80), nullable=False),
    sa.Column("created_at", TS, nullable=False),
)

cas = sa.Table(
    "cp_cas",
    metadata,
    sa.Column("org_id", sa.String(40), sa.ForeignKey("cp_orgs.id"), primary_key=True),
    sa.Column("cert_pem", sa.Text, nullable=False),
    sa.Column("key_pem_encrypted", sa.Text, nullable=False),
    sa.Column("pin", sa.String(80), nullable=False),
    sa.Column("created_at", TS, nullable=False),
)

enrollment_tokens = sa.Table(
    "cp_enrollment_tokens",
    metadata,
    _id(),
    _org(),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("description", sa.String(200), nullable=False),
    sa.Column("created_by", sa.String(40), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("expires_at", TS, nullable=False),
    sa.Column("used_at", TS),
    sa.Column("revoked_at", TS),
    sa.Column("vault_id", sa.String(40)),
)

vaults = sa.Table(
    "cp_vaults",
    metadata,
    _id(),
    _org(),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("agent_version", sa.String(64), nullable=False),
    sa.Column("csr_sha256", sa.String(64), nullable=False),
    sa.Column("cert_pem", sa.Text, nullable=False),
    sa.Column("cert_serial", sa.String(64), nullable=False),
    sa.Column("cert_not_after", TS, nullable=False),
    # revocation: the serial a renewal replaced stays valid until prev_cert_valid_until only;
    # cert_renewed_at rate-limits renewals
    sa.Column("prev_cert_serial", sa.String(64)),
    sa.Column("prev_cert_valid_until", TS),
    sa.Column("cert_renewed_at", TS),
    # the audit head only moves forward: the chain epoch and highest seq the vault reported
    sa.Column("audit_epoch", sa.Integer, nullable=False, server_default="1"),
    sa.Column("audit_seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("enrollment_token_id", sa.String(40), nullable=False, unique=True),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("last_heartbeat_at", TS),
    sa.Column("health", sa.Text, nullable=False, server_default="{}"),
    sa.Column("revoked_at", TS),
    # the uplink: every connect bumps conn_gen, so a replaced or closed connection knows it
    sa.Column("conn_gen", sa.Integer, nullable=False, server_default="0"),
    sa.Column("connected_at", TS),
    sa.Column("disconnected_at", TS),
    sa.Index("ix_cp_vaults_org_id", "org_id", "id"),
)

policies = sa.Table(
    "cp_policies",
    metadata,
    _id(),
    _org(),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.Column("intent", sa.Text),  # the sealed intent (common/intents.py); NULL: plaintext
    sa.Column("deleted_at", TS),  # deleted by a sealed deletion (kept so agents learn of it)
    sa.UniqueConstraint("org_id", "name", name="uq_cp_policies_org_name"),
)

alerts = sa.Table(
    "cp_alerts",
    metadata,
    _id(),
    _org(),
    sa.Column("dedupe_key", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("vault_id", sa.String(40)),
    sa.Column("message", sa.String(500), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("open_key", sa.String(200)),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.Column("acknowledged_at", TS),
    sa.Column("acknowledged_by", sa.String(40)),
    sa.Column("resolved_at", TS),
    sa.Column("resolved_by", sa.String(40)),
    # open_key equals dedupe_key while unresolved and NULL once resolved: one live alert per key
    sa.UniqueConstraint("org_id", "open_key", name="uq_cp_alerts_open_key"),
    sa.Index("ix_cp_alerts_org_state", "org_id", "state", "id"),
)

# the head of each worker audit chain (``workers: N``: chain k >= 1); chain 0 is cp_vaults'
audit_chains = sa.Table(
    "cp_audit_chains",
    metadata,
    sa.Column("vault_id", sa.String(40), sa.ForeignKey("cp_vaults.id"), primary_key=True),
    sa.Column("chain", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("audit_epoch", sa.Integer, nullable=False, server_default="1"),
    sa.Column("audit_seq", sa.BigInteger, nullable=False, server_default="0"),
)

audit = sa.Table(
    "cp_audit",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    _org(),
    sa.Column("event_id", sa.String(80), unique=True),
    sa.Column("at", TS, nullable=False),
    sa.Column("source", sa.String(40), nullable=False),
    sa.Column("actor", sa.String(80)),
    sa.Column("action", sa.String(80), nullable=False),
    sa.Column("target", sa.String(200)),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("details", sa.Text, nullable=False, server_default="{}"),
    # an agent entry's chain MAC: a redelivered entry must carry the same one
    sa.Column("chain_mac", sa.String(64)),
    sa.Index("ix_cp_audit_org_seq", "org_id", "seq"),
)

usage = sa.Table(
    "cp_usage_daily",
    metadata,
    sa.Column("org_id", sa.String(40), sa.ForeignKey("cp_orgs.id"), primary_key=True),
    sa.Column("vault_id", sa.String(40), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("operation", sa.String(80), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
)

inventory = sa.Table(
    "cp_inventory",
    metadata,
    sa.Column("vault_id", sa.String(40), sa.ForeignKey("cp_vaults.id"), primary_key=True),
    sa.Column("secret_id", sa.String(80), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", TS),
    sa.Column("updated_at", TS),
    sa.Column("deleted_at", TS),
    sa.Column("policy_id", sa.String(80)),
    sa.Column("rotation", sa.Text),
    sa.Column("label", sa.Text),
    sa.Column("reported_at", TS, nullable=False),
    # the outbox seq of the last ``rotation`` event applied: an older (stale) one is ignored
    sa.Column("rotation_seq", sa.BigInteger),
)

commands = sa.Table(
    "cp_commands",
    metadata,
    _id(),
    _org(),
    sa.Column("vault_id", sa.String(40), sa.ForeignKey("cp_vaults.id"), nullable=False),
    sa.Column("command", sa.String(16), nullable=False),
    sa.Column("args", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("result", sa.String(1000)),
    sa.Column("created_by", sa.String(40), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.Column("intent", sa.Text),  # the sealed intent (common/intents.py); NULL: plaintext
    sa.Index("ix_cp_commands_vault", "vault_id", "id"),
)
