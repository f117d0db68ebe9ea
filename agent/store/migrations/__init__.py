"""Alembic migrations of the agent store."""
