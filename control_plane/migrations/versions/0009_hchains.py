"""Worker audit chains (hchains): the head of each vault's worker audit chain.

An agent with ``workers: N`` ships worker k's audit log as chain k (k >= 1); its head only
moves forward like chain 0's (``cp_vaults.audit_epoch``/``audit_seq``), kept per (vault, chain).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_hchains"
down_revision = "0008_hsec"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``cp_audit_chains``."""
    op.create_table(
        "cp_audit_chains",
        sa.Column("vault_id", sa.String(40), sa.ForeignKey("cp_vaults.id"), primary_key=True),
        sa.Column("chain", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("audit_epoch", sa.Integer, nullable=False, server_default="1"),
        sa.Column("audit_seq", sa.BigInteger, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    """Drop it again."""
    op.drop_table("cp_audit_chains")
