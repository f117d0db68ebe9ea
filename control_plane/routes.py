"""Every route of the control-plane API in one table: (method, path, view, name, least role).

A least role of ``None`` means the route authenticates in its own way (or not at all).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from control_plane.views import accounts as a
from control_plane.views import alerts as al
from control_plane.views import commands as c
from control_plane.views import policies as p
from control_plane.views import sso as so
from control_plane.views import stream as st
from control_plane.views import system as y
from control_plane.views import users as u
from control_plane.views import vaults as v

View = Callable[[web.Request], Awaitable[web.StreamResponse]]
PREFIX = "/api/v1"

ROUTES: list[tuple[str, str, View, str, str | None]] = [
    ("POST", "/auth/login", a.login, "auth.login", None),
    ("POST", "/auth/logout", a.logout, "auth.logout", "viewer"),
    ("GET", "/me", a.me, "me.get", "viewer"),
    ("GET", "/users", a.list_users, "users.list", "admin"),
    ("POST", "/invitations", a.create_invitation, "invitations.create", "admin"),
    ("POST", "/invitations/accept", a.accept_invitation, "invitations.accept", None),
    ("GET", "/auth/sso/{org_id}", so.sso_public, "auth.sso_config", None),
    ("POST", "/auth/sso/{org_id}/start", so.sso_start, "auth.sso_start", None),
    ("POST", "/auth/sso", so.sso_login, "auth.sso", None),
    ("PUT", "/org/sso", so.put_sso, "org.sso_set", "owner"),
    ("GET", "/org/sso", so.get_sso, "org.sso", "admin"),
    ("PUT", "/users/{user_id}/role", u.set_role, "users.role", "admin"),
    ("DELETE", "/users/{user_id}", u.remove_user, "users.remove", "admin"),
    ("POST", "/users/{user_id}/password-reset", u.reset_password, "users.reset", "admin"),
    ("POST", "/password-resets/complete", u.complete_reset, "users.reset_complete", None),
    ("GET", "/users/{user_id}/sessions", u.list_sessions, "users.sessions", "admin"),
    ("DELETE", "/users/{user_id}/sessions", u.end_sessions, "users.sessions_end", "admin"),
    (
        "DELETE",
        "/users/{user_id}/sessions/{session_id}",
        u.end_session,
        "users.session_end",
        "admin",
    ),
    ("PUT", "/me/password", u.change_password, "me.password", "viewer"),
    ("GET", "/me/sessions", u.my_sessions, "me.sessions", "viewer"),
    ("DELETE", "/me/sessions", u.end_my_sessions, "me.sessions_end", "viewer"),
    ("DELETE", "/me/sessions/{session_id}", u.end_my_session, "me.session_end", "viewer"),
    ("PUT", "/org/metadata-key", a.put_metadata_key, "org.metadata_key", "owner"),
    ("POST", "/enrollment-tokens", v.create_token, "enrollment.create", "admin"),
    ("GET", "/enrollment-tokens", v.list_tokens, "enrollment.list", "admin"),
    ("DELETE", "/enrollment-tokens/{token_id}", v.revoke_token, "enrollment.revoke", "admin"),
    ("POST", "/vaults/register", v.register, "vaults.register", None),
    ("GET", "/vaults", v.list_vaults, "vaults.list", "viewer"),
    ("GET", "/vaults/{vault_id}", v.get_vault, "vaults.get", "viewer"),
    ("POST", "/vaults/{vault_id}/revoke", v.revoke_vault, "vaults.revoke", "admin"),
    ("GET", "/vaults/{vault_id}/inventory", c.list_inventory, "vaults.inventory", "viewer"),
    ("POST", "/vaults/{vault_id}/commands", c.create_command, "commands.create", "operator"),
    ("GET", "/vaults/{vault_id}/commands", c.list_commands, "commands.list", "viewer"),
    ("GET", "/commands/{command_id}", c.get_command, "commands.get", "viewer"),
    ("GET", "/ca", v.get_ca, "ca.get", "viewer"),
    ("GET", "/ca/crl", v.get_crl, "ca.crl", "viewer"),
    ("POST", "/policies", p.create_policy, "policies.create", "operator"),
    ("GET", "/policies", p.list_policies, "policies.list", "viewer"),
    ("GET", "/policies/{policy_id}", p.get_policy, "policies.get", "viewer"),
    ("PUT", "/policies/{policy_id}", p.update_policy, "policies.update", "operator"),
    ("DELETE", "/policies/{policy_id}", p.delete_policy, "policies.delete", "operator"),
    ("GET", "/alerts", al.list_alerts, "alerts.list", "viewer"),
    ("POST", "/alerts/{alert_id}/acknowledge", al.acknowledge_alert, "alerts.ack", "operator"),
    ("POST", "/alerts/{alert_id}/resolve", al.resolve_alert, "alerts.resolve", "operator"),
    ("GET", "/audit", al.query_audit, "audit.query", "admin"),
    ("GET", "/analytics/usage", al.usage, "analytics.usage", "viewer"),
    ("GET", "/stream", st.stream, "stream", None),
    ("GET", "/health", y.health, "sys.health", None),
    ("GET", "/ready", y.ready, "sys.ready", None),
    ("GET", "/metrics", y.metrics, "sys.metrics", None),
    ("GET", "/openapi.json", y.openapi, "sys.openapi", None),
]

LEAST_ROLE = {name: role for *_, name, role in ROUTES}


def add_routes(app: web.Application) -> None:
    """Register every route under ``/api/v1``."""
    for method, path, view, name, _ in ROUTES:
        app.router.add_route(method, PREFIX + path, view, name=name)
