"""Single sign-on (issue 16): an organisation's OpenID Connect provider and group mapping."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_i16"
down_revision = "0005_i16"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``cp_sso``."""
    op.create_table(
        "cp_sso",
        sa.Column("org_id", sa.String(40), sa.ForeignKey("cp_orgs.id"), primary_key=True),
        sa.Column("issuer", sa.String(500), nullable=False),
        sa.Column("client_id", sa.String(200), nullable=False),
        sa.Column("native_client_secret", sa.String(200)),
        sa.Column("groups_claim", sa.String(100), nullable=False),
        sa.Column("role_map", sa.Text(), nullable=False),
        sa.Column("require_sso", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    """Drop it again."""
    op.drop_table("cp_sso")
