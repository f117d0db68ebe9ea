"""Every route of the agent API in one table: (method, path, view, name, needs a token)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from agent.api import secret_views as s
from agent.api import sys_views as y
from agent.api import workload_views as w

View = Callable[[web.Request], Awaitable[web.StreamResponse]]
PREFIX = "/api/v1"

ROUTES: list[tuple[str, str, View, str, bool]] = [
    ("POST", "/secrets", s.create_secret, "secrets.create", True),
    ("GET", "/secrets", s.list_secrets, "secrets.list", True),
    ("GET", "/secrets/{id}", s.read_secret, "secrets.read", True),
    ("PUT", "/secrets/{id}", s.update_secret, "secrets.update", True),
    ("DELETE", "/secrets/{id}", s.delete_secret, "secrets.delete", True),
    ("POST", "/secrets/{id}/rotate", s.rotate_secret, "secrets.rotate", True),
    ("GET", "/secrets/{id}/versions", s.secret_versions, "secrets.versions", True),
    ("POST", "/secrets/{id}/undelete", s.undelete_secret, "secrets.undelete", True),
    ("POST", "/secrets/{id}/destroy", s.destroy_secret, "secrets.destroy", True),
    ("GET", "/health", y.health, "sys.health", False),
    ("GET", "/metrics", y.metrics, "sys.metrics", True),
    ("GET", "/openapi.json", y.openapi, "sys.openapi", False),
    ("POST", "/sys/tokens", y.create_token, "tokens.create", True),
    ("GET", "/sys/tokens", y.list_tokens, "tokens.list", True),
    ("DELETE", "/sys/tokens/{token_id}", y.revoke_token, "tokens.revoke", True),
    ("GET", "/sys/keys", y.key_status, "keys.status", True),
    ("POST", "/sys/keys/rotate", y.rotate_kek, "keys.rotate", True),
    ("POST", "/sys/keys/rekey", y.rekey, "keys.rekey", True),
    ("GET", "/sys/jobs/{job_id}", y.job_status, "jobs.get", True),
    ("POST", "/auth/jwt", w.jwt_login, "auth.jwt", False),
    ("GET", "/changes", w.changes, "changes.stream", True),
]

PUBLIC = {name for *_, name, needs_token in ROUTES if not needs_token}


def add_routes(app: web.Application) -> None:
    """Register every route under ``/api/v1``."""
    for method, path, view, name, _ in ROUTES:
        app.router.add_route(method, PREFIX + path, view, name=name)
