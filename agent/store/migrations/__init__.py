"""Alembic migrations of the agent store."""

HEAD_REVISION = "0002"  # the newest revision in versions/; a test checks it against Alembic
