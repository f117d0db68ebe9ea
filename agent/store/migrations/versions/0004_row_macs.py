"""Row MACs: ``kv_tokens.mac`` and ``kv_secrets.mac`` (agent/rowauth.py).

Existing rows get their MACs when the agent first unlocks the store after this migration (the
key is needed, and a migration has none); from then on a row without a valid MAC is refused.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the two MAC columns."""
    with op.batch_alter_table("kv_tokens") as batch:
        batch.add_column(sa.Column("mac", sa.String(64), nullable=True))
    with op.batch_alter_table("kv_secrets") as batch:
        batch.add_column(sa.Column("mac", sa.String(64), nullable=True))


def downgrade() -> None:
    """Drop them, and the row key: a later upgrade adopts the rows again with a new one."""
    op.execute(sa.text("DELETE FROM kv_meta WHERE key = 'rows_key'"))
    with op.batch_alter_table("kv_secrets") as batch:
        batch.drop_column("mac")
    with op.batch_alter_table("kv_tokens") as batch:
        batch.drop_column("mac")
