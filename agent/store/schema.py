"""The agent store's tables (SQLAlchemy Core). Values are only ever stored sealed.

For Alembic (``migrations/env.py``), tests and benches only: the running agent's statements are
plain SQL (:mod:`agent.store.sql`) and nothing on its path imports this module (or SQLAlchemy).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

meta = Table(
    "kv_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

keks = Table(
    "kv_keks",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("wrapped", LargeBinary, nullable=False),
    Column("state", String(16), nullable=False),  # active | retired | destroyed
    Column("created_at", String(40), nullable=False),
    Column("retired_at", String(40)),
)

secrets = Table(
    "kv_secrets",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("current_version", Integer, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("labels", Text, nullable=False, default="{}"),
    Column("created_at", String(40), nullable=False),
    Column("updated_at", String(40), nullable=False),
    Column("deleted_at", String(40)),
    Column("mac", String(64)),  # binds name to id (agent/rowauth.py); NULL only before 0004
)

versions = Table(
    "kv_versions",
    metadata,
    Column(
        "secret_id", String(40), ForeignKey("kv_secrets.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("kek_version", Integer, nullable=False),
    Column("wrapped_dek", LargeBinary, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("origin", String(16), nullable=False),  # create | update | rotate
    Column("state", String(16)),  # NULL: committed (readable) | pending: a rotation in flight
)
Index("ix_kv_versions_kek", versions.c.kek_version)

tokens = Table(
    "kv_tokens",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("policy", Text, nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("expires_at", String(40)),
    Column("revoked_at", String(40)),
    Column("mac", String(64)),  # the agent wrote this row as it is (agent/rowauth.py)
)

# The uplink's durable outbox: rows written in the same transaction as the change they describe,
# deleted once the control plane has acknowledged them. AUTOINCREMENT on SQLite so a sequence
# number is never reused after the table empties (event ids are ``o<seq>``).
outbox = Table(
    "kv_outbox",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column(
        "kind", String(32), nullable=False
    ),  # inventory | inventory_sync | command_result | alert
    Column("body", Text, nullable=False),  # JSON
    Column("created_at", String(40), nullable=False),
    sqlite_autoincrement=True,
)

# Commands from the control plane, remembered so that each id runs at most once.
commands = Table(
    "kv_commands",
    metadata,
    Column("id", String(80), primary_key=True),
    Column("command", String(16), nullable=False),
    Column("state", String(16), nullable=False),  # running | done
    Column("received_at", String(40), nullable=False),
    Column("finished_at", String(40)),
    Column("result", Text),  # the command_result data, JSON
)

# Rotation schedule per governed secret (docs/rotation.md). ``lease_*`` claims a rotation so
# that several agent replicas on one store run each due rotation once.
rotation = Table(
    "kv_rotation",
    metadata,
    Column(
        "secret_id", String(40), ForeignKey("kv_secrets.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("policy_id", String(80), nullable=False),
    Column("next_due_at", String(40), nullable=False),
    Column("last_rotated_at", String(40)),
    Column("state", String(16), nullable=False),  # scheduled | pending | ok | failed
    Column("last_reason", String(40)),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("lease_owner", String(80)),
    Column("lease_until", String(40)),
)
Index("ix_kv_rotation_due", rotation.c.next_due_at)
