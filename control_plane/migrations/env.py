"""Alembic environment: migrations run on a connection the control plane hands in."""

from __future__ import annotations

from alembic import context

from control_plane.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,
    version_table="cp_alembic_version",
)
with context.begin_transaction():
    context.run_migrations()
