"""Rotation (issue 5): the inventory remembers which rotation event it applied last."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``cp_inventory.rotation_seq``."""
    with op.batch_alter_table("cp_inventory") as batch:
        batch.add_column(sa.Column("rotation_seq", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    """Remove it again."""
    with op.batch_alter_table("cp_inventory") as batch:
        batch.drop_column("rotation_seq")
