"""Rotation: pending versions (``kv_versions.state``) and the per-secret schedule ``kv_rotation``."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add kv_versions.state (NULL = committed, 'pending' = not readable) and kv_rotation."""
    with op.batch_alter_table("kv_versions") as batch:
        batch.add_column(sa.Column("state", sa.String(16), nullable=True))
    op.create_table(
        "kv_rotation",
        sa.Column(
            "secret_id",
            sa.String(40),
            sa.ForeignKey("kv_secrets.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("policy_id", sa.String(80), nullable=False),
        sa.Column("next_due_at", sa.String(40), nullable=False),
        sa.Column("last_rotated_at", sa.String(40)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("last_reason", sa.String(40)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.String(80)),
        sa.Column("lease_until", sa.String(40)),
    )
    op.create_index("ix_kv_rotation_due", "kv_rotation", ["next_due_at"])


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_kv_rotation_due", "kv_rotation")
    op.drop_table("kv_rotation")
    with op.batch_alter_table("kv_versions") as batch:
        batch.drop_column("state")
