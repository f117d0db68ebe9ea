"""The agent store's tables (SQLAlchemy Core). Values are only ever stored sealed."""

from __future__ import annotations

from sqlalchemy import (
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
)
