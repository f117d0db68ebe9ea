"""Alembic migrations of the agent store."""

HEAD_REVISION = "0004"  # the newest revision in versions/; a test checks it against Alembic
