"""The OpenAPI 3.1 document of the control-plane API, written by hand, checked against routes."""

from __future__ import annotations

from functools import cache
from typing import Any

from control_plane.openapi_kit import (
    INT,
    NSTR,
    STR,
    J,
    _json,
    _obj,
    _op,
    _page,
    _path,
    _q,
    _ref,
)
from control_plane.openapi_users import users_paths

# Every text the server accepts refuses control characters (serverkit.body): body and query
# text may hold tab, newline and return; a path id none at all. Integers fit BIGINT.
TEXT = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$"
PATH_ID = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
INT32_MAX = 2**31 - 1
AUDIT_TOKEN: J = {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,80}$"}
_NOT_IN_EMAIL = "@\\s\\u0000-\\u001f\\u007f-\\u009f"
EMAIL: J = {
    "type": "string",
    "minLength": 3,
    "maxLength": 320,
    "pattern": f"^[ \\t\\n\\r]*[^{_NOT_IN_EMAIL}]+@[^{_NOT_IN_EMAIL}]+[ \\t\\n\\r]*$",
    "description": "one '@' between a non-empty local part and domain, no spaces inside",
}
INT64 = {"minimum": -(2**63), "maximum": 2**63 - 1}
_NESTED = ("items", "additionalProperties", "propertyNames", "contains", "not")
_LISTS = ("oneOf", "anyOf", "allOf", "prefixItems")


def strict(schema: Any, components: J, pattern: str = TEXT) -> Any:
    """A copy of a request schema stating the server's text and integer rules ($refs inlined)."""
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        return strict(components[schema["$ref"].rsplit("/", 1)[1]], components, pattern)
    out = dict(schema)
    kinds = out.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "string" in kinds and not {"pattern", "enum", "const", "format"} & set(out):
        out["pattern"] = pattern
    if "integer" in kinds:
        out = {**INT64, **out}
    if isinstance(out.get("properties"), dict):
        out["properties"] = {
            k: strict(v, components, pattern) for k, v in out["properties"].items()
        }
    for key in _NESTED:
        if isinstance(out.get(key), dict):
            out[key] = strict(out[key], components, pattern)
    for key in _LISTS:
        if isinstance(out.get(key), list):
            out[key] = [strict(v, components, pattern) for v in out[key]]
    return out


def strict_requests(paths: J, components: J) -> None:
    """State the text and integer rules on every parameter and request body, in place."""
    for item in paths.values():
        ops = [op for op in item.values() if isinstance(op, dict)]
        for op in [item, *ops]:
            for param in op.get("parameters", []):
                rule = PATH_ID if param["in"] == "path" else TEXT
                schema = strict(param["schema"], components, rule)
                if schema.get("type") == "string":  # an empty value is refused: leave it out
                    schema = {"minLength": 1, **schema}
                param["schema"] = schema
            body = op.get("requestBody")
            if body:
                media = body["content"]["application/json"]
                media["schema"] = strict(media["schema"], components)


def _schemas() -> J:
    vault = _obj(
        {
            "id": STR,
            "name": STR,
            "agent_version": STR,
            "status": {"enum": ["online", "offline", "pending", "revoked"]},
            "created_at": STR,
            "last_heartbeat_at": NSTR,
            "certificate_serial": STR,
            "certificate_not_after": STR,
            "revoked_at": NSTR,
            "health": {"type": "object"},
        },
        ["id", "name", "status"],
    )
    alert = _obj(
        {
            "id": STR,
            "key": STR,
            "kind": STR,
            "severity": STR,
            "vault_id": NSTR,
            "message": STR,
            "state": {"enum": ["open", "acknowledged", "resolved"]},
            "created_at": STR,
            "updated_at": STR,
            "acknowledged_at": NSTR,
            "acknowledged_by": NSTR,
            "resolved_at": NSTR,
            "resolved_by": NSTR,
        },
        ["id", "key", "kind", "state"],
    )
    selector = _obj({"labels": {"type": "object", "additionalProperties": STR}, "name_glob": STR})
    rotator = _obj(
        {"type": {"enum": ["random", "postgres", "command"]}, "settings": {"type": "object"}},
        ["type"],
    )
    scope: J = {
        "oneOf": [
            {"const": "all"},
            _obj({"all": {"const": True}}, ["all"]),
            _obj({"vault_ids": {"type": "array", "items": STR}}, ["vault_ids"]),
        ]
    }
    policy_fields: J = {
        "name": STR,
        "selector": selector,
        "interval_seconds": INT,
        "notice_seconds": INT,
        "rotator": rotator,
        "scope": scope,
        # a sealed policy (docs/intents.md): sent alone, relayed as it is, opened by agents
        "intent": {"type": "object", "description": "A sealed operator intent (docs/intents.md)."},
    }
    policy = _obj(
        {**policy_fields, "id": STR, "version": INT, "sealed": {"type": "boolean"},
         "created_at": STR, "updated_at": STR},
        ["id", "version"],
    )  # fmt: skip
    user = _obj(
        {"id": STR, "org_id": STR, "email": STR, "role": STR, "created_at": STR},
        ["id", "email", "role"],
    )
    token_info = _obj(
        {
            "id": STR,
            "description": STR,
            "state": {"enum": ["active", "used", "expired", "revoked"]},
            "created_at": STR,
            "expires_at": STR,
            "used_at": NSTR,
            "revoked_at": NSTR,
            "vault_id": NSTR,
        },
        ["id", "state"],
    )
    audit_entry = _obj(
        {
            "seq": INT,
            "event_id": NSTR,
            "at": STR,
            "source": STR,
            "actor": NSTR,
            "action": STR,
            "target": NSTR,
            "outcome": STR,
            "details": {"type": "object"},
        },
        ["seq", "at", "action", "outcome"],
    )
    return {
        "Error": _obj(
            {
                "error": _obj(
                    {"code": STR, "message": STR, "details": {"type": "object"}},
                    ["code", "message"],
                )
            },
            ["error"],
        ),
        "Vault": vault,
        "Alert": alert,
        "Policy": policy,
        "PolicyFields": _obj(policy_fields),
        "User": user,
        "EnrollmentToken": token_info,
        "AuditEntry": audit_entry,
        "Command": _obj(
            {
                "id": STR,
                "vault_id": STR,
                "command": {"enum": ["rotate", "resync", "sealed"]},
                "args": {"type": "object"},
                "intent": {"type": "object"},
                "state": {"enum": ["pending", "sent", "succeeded", "failed"]},
                "result": NSTR,
                "created_by": STR,
                "created_at": STR,
                "updated_at": STR,
            },
            ["id", "vault_id", "command", "args", "state"],
        ),
        "InventoryItem": _obj(
            {
                "secret_id": STR,
                "version": INT,
                "created_at": NSTR,
                "updated_at": NSTR,
                "deleted_at": NSTR,
                "policy_id": NSTR,
                "rotation": {"type": ["object", "null"]},
                "label": NSTR,
                "reported_at": STR,
            },
            ["secret_id", "version", "reported_at"],
        ),
        "Identity": _obj(
            {"vault_id": STR, "certificate": STR, "ca_certificate": STR, "name": STR},
            ["vault_id", "certificate", "ca_certificate"],
        ),
    }


def _accounts() -> J:
    creds = _obj({"email": EMAIL, "password": STR}, ["email", "password"])
    session = _obj({"token": STR, "expires_at": STR, "user": _ref("User")}, ["token", "expires_at"])
    invite = _obj(
        {"email": EMAIL, "role": {"enum": ["viewer", "operator", "admin", "owner"]}},
        ["email", "role"],
    )
    return {
        "/auth/login": {
            "post": _op(
                "login",
                "Log in; returns a session token",
                {"200": _json(session, "a new session")},
                "401 429",
                body=creds,
                secure=False,
            )
        },
        "/auth/logout": {
            "post": _op(
                "logout", "Revoke the caller's session", {"204": {"description": "revoked"}}
            )
        },
        "/me": {
            "get": _op(
                "me",
                "The caller and their organisation",
                {"200": _json({"type": "object"}, "the caller")},
            )
        },
        "/users": {
            "get": _op(
                "listUsers",
                "Users of the organisation",
                {"200": _json(_obj({"items": {"type": "array", "items": _ref("User")}}), "users")},
            )
        },
        "/invitations": {
            "post": _op(
                "createInvitation",
                "Invite a user (token shown once)",
                {"201": _json({"type": "object"}, "the invitation")},
                "409",
                body=invite,
            )
        },
        "/invitations/accept": {
            "post": _op(
                "acceptInvitation",
                "Accept an invitation with a password",
                {"201": _json(_ref("User"), "the new user")},
                "404 409 429",
                body=_obj(
                    {"token": STR, "password": {**STR, "minLength": 12, "maxLength": 1024}},
                    ["token", "password"],
                ),
                secure=False,
            )
        },
        "/org/metadata-key": {
            "put": _op(
                "setMetadataKey",
                "Register the fingerprint of the organisation's metadata key",
                {"200": _json(_obj({"org_id": STR, "fingerprint": STR}), "registered")},
                body=_obj(
                    {"fingerprint": {**STR, "pattern": "^sha256:[0-9a-f]{64}$"}}, ["fingerprint"]
                ),
            )
        },
    }


def _vaults() -> J:
    # the formats Vaults.register checks (control_plane/services/vaults.py)
    reg = _obj(
        {
            "token": {**STR, "pattern": "^kve_[A-Za-z0-9_-]{20,64}\\.[0-9a-f]{64}$"},
            "csr": {**STR, "minLength": 1, "maxLength": 8192, "description": "a PEM CSR"},
            "name": {**STR, "pattern": "^[A-Za-z0-9][A-Za-z0-9_.\\-]{0,99}$"},
            "agent_version": {**STR, "pattern": "^[A-Za-z0-9.+_-]{1,64}$"},
        },
        ["token", "csr", "name", "agent_version"],
    )
    created = _obj(
        {
            "id": STR,
            "token": STR,
            "ca_pin": STR,
            "description": STR,
            "created_at": STR,
            "expires_at": STR,
            "gateway_url": NSTR,
        },
        ["id", "token", "ca_pin"],
    )
    tokens = _obj({"items": {"type": "array", "items": _ref("EnrollmentToken")}}, ["items"])
    paging = [_q("limit", {"type": "integer", "minimum": 1, "maximum": 500}), _q("cursor", STR)]
    return {
        "/enrollment-tokens": {
            "post": _op(
                "createEnrollmentToken",
                "A single-use enrollment token with the CA pin",
                {"201": _json(created, "the token (shown once)")},
                body=_obj(
                    {
                        "description": {**STR, "maxLength": 200},
                        "ttl_seconds": {
                            "type": ["integer", "null"],
                            "minimum": 10,
                            "maximum": 604800,
                            "description": "lifetime in seconds (null: the server's default)",
                        },
                    }
                ),
            ),
            "get": _op(
                "listEnrollmentTokens",
                "Enrollment tokens (never their strings)",
                {"200": _json(tokens, "tokens")},
            ),
        },
        "/enrollment-tokens/{token_id}": {
            "parameters": [_path("token_id")],
            "delete": _op(
                "revokeEnrollmentToken",
                "Revoke an enrollment token",
                {"200": _json(_ref("EnrollmentToken"), "revoked")},
                "404",
            ),
        },
        "/vaults/register": {
            "post": _op(
                "registerVault",
                "Enroll an agent: a CSR and a token give a client certificate",
                {
                    "201": _json(_ref("Identity"), "a new vault"),
                    "200": _json(
                        _ref("Identity"), "the same identity (retry within the grace window)"
                    ),
                },
                "401",
                body=reg,
                secure=False,
            )
        },
        "/vaults": {
            "get": _op(
                "listVaults",
                "Vaults with live status (keyset-paginated)",
                {"200": _json(_page("Vault"), "a page")},
                params=paging,
            )
        },
        "/vaults/{vault_id}": {
            "parameters": [_path("vault_id")],
            "get": _op("getVault", "One vault", {"200": _json(_ref("Vault"), "the vault")}, "404"),
        },
        "/vaults/{vault_id}/revoke": {
            "parameters": [_path("vault_id")],
            "post": _op(
                "revokeVault",
                "Revoke a vault and its certificate",
                {"200": _json(_ref("Vault"), "revoked")},
                "404",
            ),
        },
        "/ca": {
            "get": _op(
                "getCA",
                "The organisation's CA certificate and pin",
                {"200": _json(_obj({"certificate": STR, "pin": STR}), "the CA")},
            )
        },
        "/ca/crl": {
            "get": _op(
                "getCRL",
                "The organisation's certificate revocation list",
                {
                    "200": {
                        "description": "PEM CRL",
                        "content": {"application/x-pem-file": {"schema": STR}},
                    }
                },
            )
        },
    }


def _commands() -> J:
    paging = [_q("limit", {"type": "integer", "minimum": 1, "maximum": 500}), _q("cursor", STR)]
    create = _obj(  # a sealed command is {"intent": …} alone (docs/intents.md)
        {"command": {"enum": ["rotate", "resync"]}, "args": {"type": "object"},
         "intent": {"type": "object"}}
    )  # fmt: skip
    return {
        "/vaults/{vault_id}/inventory": {
            "parameters": [_path("vault_id")],
            "get": _op(
                "listInventory",
                "The secrets a vault reports (opaque ids, versions, sealed labels)",
                {"200": _json(_page("InventoryItem"), "a page")},
                "404",
                params=paging,
            ),
        },
        "/vaults/{vault_id}/commands": {
            "parameters": [_path("vault_id")],
            "post": _op(
                "createCommand",
                "Send a vault a command (rotate a secret, resync); delivered when it is online",
                {"202": _json(_ref("Command"), "stored and routed to the vault")},
                "404 409",
                body=create,
            ),
            "get": _op(
                "listCommands",
                "A vault's commands, oldest first",
                {"200": _json(_page("Command"), "a page")},
                "404",
                params=paging,
            ),
        },
        "/commands/{command_id}": {
            "parameters": [_path("command_id")],
            "get": _op(
                "getCommand", "One command", {"200": _json(_ref("Command"), "the command")}, "404"
            ),
        },
    }


def _policies_alerts() -> J:
    pid = [_path("policy_id")]
    aid = [_path("alert_id")]
    alert_params = [
        _q("state", {"enum": ["open", "acknowledged", "resolved"]}),
        _q("cursor", STR),
        _q("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
    ]
    items = _obj({"items": {"type": "array", "items": _ref("Policy")}}, ["items"])
    return {
        "/policies": {
            "post": _op(
                "createPolicy",
                "Create a rotation policy",
                {"201": _json(_ref("Policy"), "created")},
                "409",
                body=_ref("PolicyFields"),
            ),
            "get": _op("listPolicies", "Rotation policies", {"200": _json(items, "policies")}),
        },
        "/policies/{policy_id}": {
            "parameters": pid,
            "get": _op("getPolicy", "One policy", {"200": _json(_ref("Policy"), "it")}, "404"),
            "put": _op(
                "updatePolicy",
                "Change a policy",
                {"200": _json(_ref("Policy"), "updated")},
                "404 409",
                body=_ref("PolicyFields"),
            ),
            "delete": _op(
                "deletePolicy",
                "Delete a policy (a sealed one with a sealed deletion as the body)",
                {"204": {"description": "gone"}},
                "404 409",
            ),
        },
        "/alerts": {
            "get": _op(
                "listAlerts",
                "Alerts",
                {"200": _json(_page("Alert"), "a page")},
                params=alert_params,
            )
        },
        "/alerts/{alert_id}/acknowledge": {
            "parameters": aid,
            "post": _op(
                "acknowledgeAlert",
                "open → acknowledged",
                {"200": _json(_ref("Alert"), "acknowledged")},
                "404 409",
            ),
        },
        "/alerts/{alert_id}/resolve": {
            "parameters": aid,
            "post": _op(
                "resolveAlert", "→ resolved", {"200": _json(_ref("Alert"), "resolved")}, "404 409"
            ),
        },
    }


def _data_system() -> J:
    audit_params = [
        _q("after", {"type": "integer", "minimum": 0, "maximum": INT32_MAX}),
        _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
        _q("action", AUDIT_TOKEN),
        _q("source", AUDIT_TOKEN),
        _q("since", {**STR, "format": "date-time"}),
        _q("until", {**STR, "format": "date-time"}),
        _q(
            "before", {"type": "integer", "minimum": 0, "maximum": INT32_MAX}
        ),  # newest first; 0: from the newest
    ]
    usage_row = _obj({"day": STR, "vault_id": STR, "operation": STR, "count": INT})
    usage = _obj(
        {"from": STR, "to": STR, "rows": {"type": "array", "items": usage_row}, "total": INT},
        ["from", "to", "rows"],
    )
    audit = _obj(
        {
            "items": {"type": "array", "items": _ref("AuditEntry")},
            "next_after": {"type": ["integer", "null"]},
            "next_before": {"type": ["integer", "null"]},
        },
        ["items"],
    )
    text_ok = {
        "200": {"description": "Prometheus text", "content": {"text/plain": {"schema": STR}}}
    }
    return {
        "/audit": {
            "get": _op(
                "queryAudit",
                "The central audit log (metadata only)",
                {"200": _json(audit, "a page")},
                params=audit_params,
            )
        },
        "/analytics/usage": {
            "get": _op(
                "usage",
                "Counts per day per vault per operation",
                {"200": _json(usage, "usage")},
                params=[
                    _q("from", {**STR, "format": "date"}),
                    _q("to", {**STR, "format": "date"}),
                    _q("vault_id", STR),
                ],
            )
        },
        "/stream": {"get": _stream_op()},
        "/health": {
            "get": _op(
                "health", "Liveness", {"200": _json({"type": "object"}, "alive")}, secure=False
            )
        },
        "/ready": {
            "get": _op(
                "ready",
                "Readiness (database and Redis)",
                {"200": _json({"type": "object"}, "ready")},
                secure=False,
            )
        },
        "/metrics": {"get": _op("metrics", "Prometheus metrics", text_ok, secure=False)},
        "/openapi.json": {
            "get": _op(
                "openapi",
                "This document",
                {"200": _json({"type": "object"}, "OpenAPI 3.1")},
                secure=False,
            )
        },
    }


STREAM_AUTH = (
    "WebSocket of the caller's organisation's events (any role). Authenticate with "
    "`Authorization: Bearer kvs_…` on the upgrade request; a client that cannot set headers "
    'may instead send `{"type": "auth", "token": "kvs_…"}` as its first message '
    "within 10 s. A refused token is HTTP 401 on the upgrade, or close code 4401 after it; "
    "the session is re-checked about every 15 s and the socket closed with 4401 once it ended "
    '(expired, revoked, user removed). The server then sends `{"type": "hello"}` and '
    'events `{"type", "org_id", "at", "data"}`; 4408 closes a client too slow to read.'
)


def _stream_op() -> J:
    """The operator stream: a WebSocket upgrade authenticated by the session token."""
    op = _op(
        "stream",
        "WebSocket of the organisation's events",
        {"101": {"description": "switching to WebSocket"}},
        "401",
        secure=False,
    )
    op["description"] = STREAM_AUTH
    # the bearer header, or (for clients without headers) the first message: both optional
    # at the HTTP layer, so the document lists both ways
    op["security"] = [{"session": []}, {}]
    op["responses"]["401"] = _json(
        _ref("Error"), "no valid session token on the upgrade (Bearer kvs_…)"
    )
    op["x-websocket-close-codes"] = {
        "4401": "the session ended or the first-message token was refused",
        "4408": "the client read too slowly; reconnect",
    }
    return op


@cache
def openapi_document() -> J:
    """The whole document (built once)."""
    paths = {
        **_accounts(),
        **users_paths(),
        **_vaults(),
        **_commands(),
        **_policies_alerts(),
        **_data_system(),
    }
    strict_requests(paths, _schemas())
    return {
        "openapi": "3.1.0",
        "info": {"title": "KeyVault control plane", "version": "1"},
        "paths": {"/api/v1" + p: item for p, item in paths.items()},
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"session": {"type": "http", "scheme": "bearer"}},
        },
    }
