"""Revocable certificates and an audit head that only moves forward (issue 14).

``cp_vaults`` keeps the serial a renewal replaced (valid for a short overlap), when the vault
last renewed (rate limit), and the audit chain's epoch and highest sequence number reported;
``cp_audit`` keeps each agent entry's chain MAC so a redelivery with other content shows.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_i14b"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the certificate-overlap, renewal, audit-head and chain-MAC columns."""
    with op.batch_alter_table("cp_vaults") as batch:
        batch.add_column(sa.Column("prev_cert_serial", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column("prev_cert_valid_until", sa.DateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("cert_renewed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("audit_epoch", sa.Integer(), server_default="1", nullable=False))
        batch.add_column(
            sa.Column("audit_seq", sa.BigInteger(), server_default="0", nullable=False)
        )
    with op.batch_alter_table("cp_audit") as batch:
        batch.add_column(sa.Column("chain_mac", sa.String(length=64), nullable=True))


def downgrade() -> None:
    """Remove them again."""
    with op.batch_alter_table("cp_audit") as batch:
        batch.drop_column("chain_mac")
    with op.batch_alter_table("cp_vaults") as batch:
        for name in (
            "audit_seq",
            "audit_epoch",
            "cert_renewed_at",
            "prev_cert_valid_until",
            "prev_cert_serial",
        ):
            batch.drop_column(name)
