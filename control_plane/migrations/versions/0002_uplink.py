"""The fleet link: service CA, uplink connection columns, inventory and commands."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the service CA, the vaults' connection columns, inventory and commands."""
    op.create_table(
        "cp_service_ca",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("cert_pem", sa.Text(), nullable=False),
        sa.Column("key_pem_encrypted", sa.Text(), nullable=False),
        sa.Column("pin", sa.String(length=80), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("cp_vaults") as batch:
        batch.add_column(sa.Column("conn_gen", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("connected_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("disconnected_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "cp_inventory",
        sa.Column("vault_id", sa.String(length=40), nullable=False),
        sa.Column("secret_id", sa.String(length=80), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("policy_id", sa.String(length=80), nullable=True),
        sa.Column("rotation", sa.Text(), nullable=True),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["vault_id"], ["cp_vaults.id"]),
        sa.PrimaryKeyConstraint("vault_id", "secret_id"),
    )
    op.create_table(
        "cp_commands",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("vault_id", sa.String(length=40), nullable=False),
        sa.Column("command", sa.String(length=16), nullable=False),
        sa.Column("args", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("result", sa.String(length=1000), nullable=True),
        sa.Column("created_by", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["cp_orgs.id"]),
        sa.ForeignKeyConstraint(["vault_id"], ["cp_vaults.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_cp_commands_vault", "cp_commands", ["vault_id", "id"], unique=False)


def downgrade() -> None:
    """Remove them again."""
    op.drop_index("ix_cp_commands_vault", table_name="cp_commands")
    op.drop_table("cp_commands")
    op.drop_table("cp_inventory")
    with op.batch_alter_table("cp_vaults") as batch:
        batch.drop_column("disconnected_at")
        batch.drop_column("connected_at")
        batch.drop_column("conn_gen")
    op.drop_table("cp_service_ca")
