"""Single sign-ons in progress (hsec): the nonce the control plane issued for each login.

``POST /auth/sso/{org_id}/start`` records one row (the login id only as its SHA-256); the
login with an ID token deletes it (single use) and requires the token's ``nonce`` to equal it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_hsec"
down_revision = "0007_i14a"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``cp_sso_logins``."""
    op.create_table(
        "cp_sso_logins",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("org_id", sa.String(40), sa.ForeignKey("cp_orgs.id"), nullable=False),
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_cp_sso_logins_expires_at", "cp_sso_logins", ["expires_at"])


def downgrade() -> None:
    """Drop it again."""
    op.drop_index("ix_cp_sso_logins_expires_at", table_name="cp_sso_logins")
    op.drop_table("cp_sso_logins")
