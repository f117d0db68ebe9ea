"""Sealed operator intents (issue 14): policies and commands stored as the operators sealed them.

``cp_policies.intent`` / ``cp_commands.intent`` hold the intent's JSON (``common/intents.py``),
opaque to the control plane but for its clear header; ``cp_policies.deleted_at`` marks a policy
deleted by a sealed deletion, which stays (as a tombstone) so that agents learn of it. Rows from
before (``intent`` NULL) are plaintext policies: agents refuse them until an operator re-saves
them from an app (which seals them).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_i14a"
down_revision = (
    "0006_i16"  # after the certificate and audit-head columns (i14b) and the accounts tables (i16)
)
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the intent columns and the tombstone time."""
    with op.batch_alter_table("cp_policies") as batch:
        batch.add_column(sa.Column("intent", sa.Text(), nullable=True))
        batch.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("cp_commands") as batch:
        batch.add_column(sa.Column("intent", sa.Text(), nullable=True))


def downgrade() -> None:
    """Remove them again."""
    with op.batch_alter_table("cp_commands") as batch:
        batch.drop_column("intent")
    with op.batch_alter_table("cp_policies") as batch:
        batch.drop_column("deleted_at")
        batch.drop_column("intent")
