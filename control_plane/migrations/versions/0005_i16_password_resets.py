"""User management (issue 16): single-use password-reset tokens an admin issues."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_i16"
down_revision = "0004_i14b"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``cp_password_resets``."""
    op.create_table(
        "cp_password_resets",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("org_id", sa.String(40), sa.ForeignKey("cp_orgs.id"), nullable=False),
        sa.Column("user_id", sa.String(40), sa.ForeignKey("cp_users.id"), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_by", sa.String(40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    """Drop it again."""
    op.drop_table("cp_password_resets")
