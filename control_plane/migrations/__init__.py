"""Alembic migrations of the control plane (PostgreSQL and SQLite)."""
