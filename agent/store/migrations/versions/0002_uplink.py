"""The uplink: the durable outbox and the commands already executed."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create kv_outbox and kv_commands."""
    op.create_table(
        "kv_outbox",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "kv_commands",
        sa.Column("id", sa.String(80), primary_key=True),
        sa.Column("command", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("received_at", sa.String(40), nullable=False),
        sa.Column("finished_at", sa.String(40)),
        sa.Column("result", sa.Text),
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_table("kv_commands")
    op.drop_table("kv_outbox")
