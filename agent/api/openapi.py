"""The OpenAPI 3.1 document of the agent API, written by hand and checked against the routes."""

from __future__ import annotations

from functools import cache
from typing import Any

from agent.auth import CAPABILITIES
from agent.generate import CLASSES
from agent.rowauth import CURSOR_PATTERN
from agent.settings import JWT_NAME_PATTERN
from agent.text import SAFE_LINE, SAFE_TEXT
from agent.uplink.status import STATES
from agent.workload import JWS_PATTERN, MAX_JWT_BYTES

MAX_PER_CLASS = 2  # the rotate route's bound: 2 of each of 4 classes fit the minimum length 8
J = dict[str, Any]


def _ref(name: str) -> J:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: J, description: str) -> J:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {
    "400": "invalid request",
    "401": "missing, unknown, revoked or expired token",
    "403": "the token's policy does not allow this",
    "404": "no such object",
    "409": "conflicts with the current state",
    "413": "body too large",
    "415": "the body is not sent as application/json (UTF-8)",
    "503": "the store or the audit log is unavailable (fails closed)",
}


def _op(
    op_id: str,
    summary: str,
    ok: dict[str, J],
    errors: str,
    *,
    body: J | None = None,
    params: list[J] | None = None,
    secure: bool = True,
) -> J:
    responses = dict(ok)
    for code in errors.split():
        responses[code] = _json(_ref("Error"), ERRORS[code])
    responses.setdefault("503", _json(_ref("Error"), ERRORS["503"]))
    doc: J = {"operationId": op_id, "summary": summary, "responses": responses}
    if params:
        doc["parameters"] = params
    if body is not None:
        responses.setdefault("415", _json(_ref("Error"), ERRORS["415"]))
        doc["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if not secure:
        doc["security"] = []
    return doc


def _path_param(name: str, description: str) -> J:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    }


def _query(name: str, schema: J, description: str) -> J:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


SECRET_ID = _path_param(
    "id", "The secret's id (sec_…) or its name, URL-encoded (a '/' in a name is sent as %2F)."
)
LABELS: J = {
    "type": "object",
    "maxProperties": 32,
    "propertyNames": {"pattern": "^[a-z0-9][a-z0-9_.-]{0,62}$"},
    "additionalProperties": {"type": "string", "maxLength": 256, "pattern": SAFE_LINE},
}
# agent.secrets.NAME_RE: segments of letters, digits, _ . - joined by single slashes
NAME_PATTERN = "^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$"


_NULLABLE_TEXT: J = {"type": ["string", "null"]}
UPLINK_STATUS: J = {
    "type": "object",
    "description": "The link to the control plane (docs/uplink.md).",
    "required": [
        "state",
        "vault_id",
        "control_plane_url",
        "last_connected_at",
        "last_error",
        "outbox_depth",
        "certificate_not_after",
    ],
    "properties": {
        "state": {"enum": list(STATES)},
        "vault_id": _NULLABLE_TEXT,
        "control_plane_url": _NULLABLE_TEXT,
        "last_connected_at": _NULLABLE_TEXT,
        "last_error": _NULLABLE_TEXT,
        "outbox_depth": {"type": "integer", "minimum": 0},
        "certificate_not_after": _NULLABLE_TEXT,
    },
}


def _schemas() -> J:
    meta_props: J = {
        "id": {"type": "string", "pattern": "^sec_[a-z2-7]{26}$"},
        "name": {"type": "string"},
        "version": {"type": "integer", "minimum": 1},
        "description": {"type": "string"},
        "labels": LABELS,
        "created_at": {"type": "string"},
        "updated_at": {"type": "string"},
        "deleted_at": {"type": ["string", "null"]},
    }
    rule: J = {
        "type": "object",
        "additionalProperties": False,
        "required": ["path", "capabilities"],
        "properties": {
            "path": {
                "type": "string",
                "minLength": 1,
                "maxLength": 200,
                "pattern": "^[A-Za-z0-9_./*?-]{1,200}$",
            },
            "capabilities": {"type": "array", "minItems": 1, "items": {"enum": list(CAPABILITIES)}},
        },
    }
    token_info: J = {
        "type": "object",
        "required": ["id", "name", "policy", "created_at", "expires_at", "revoked_at"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "policy": {"type": "array", "items": rule},
            "created_at": {"type": "string"},
            "expires_at": {"type": ["string", "null"]},
            "revoked_at": {"type": ["string", "null"]},
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "details": {"type": "object"},
                    },
                }
            },
        },
        "SecretMeta": {"type": "object", "required": list(meta_props), "properties": meta_props},
        "SecretValue": {
            "type": "object",
            "required": [*meta_props, "value", "current_version"],
            "properties": {
                **meta_props,
                "value": {"type": "string"},
                "current_version": {"type": "integer", "minimum": 1},
            },
        },
        "SecretCreate": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "value"],
            "properties": {
                "name": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 200,
                    "pattern": NAME_PATTERN,
                },
                "value": {"type": "string", "minLength": 1},
                "description": {"type": "string", "maxLength": 1000, "pattern": SAFE_TEXT},
                "labels": LABELS,
            },
        },
        "SecretUpdate": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {
                "value": {"type": "string", "minLength": 1},
                "description": {"type": "string", "maxLength": 1000, "pattern": SAFE_TEXT},
                "labels": LABELS,
            },
        },
        "Generator": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "mode": {"enum": ["password", "bytes"]},
                "length": {"type": "integer", "minimum": 8, "maximum": 1024},
                "classes": {
                    "type": "array",
                    "items": {"enum": list(CLASSES)},
                    "minItems": 1,
                    "uniqueItems": True,
                },
                "min_per_class": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": MAX_PER_CLASS,
                    "description": "At least this many of each class (0-2, so that any set of "
                    "classes fits the shortest length).",
                },
                "exclude_lookalikes": {"type": "boolean"},
                "encoding": {"enum": ["base64", "hex"]},
            },
        },
        "Rule": rule,
        "TokenInfo": token_info,
        "Job": {
            "type": "object",
            "required": ["id", "kind", "state", "done", "total"],
            "properties": {
                "id": {"type": "string"},
                "kind": {"type": "string"},
                "state": {"enum": ["running", "succeeded", "failed"]},
                "done": {"type": "integer"},
                "total": {"type": "integer"},
                "result": {"type": "object"},
                "error": {"type": ["string", "null"]},
                "started_at": {"type": "string"},
                "finished_at": {"type": ["string", "null"]},
            },
        },
    }


def _paths() -> J:
    meta = _json(_ref("SecretMeta"), "the secret's metadata")
    return {
        "/api/v1/secrets": {
            "post": _op(
                "createSecret",
                "Create a secret (version 1)",
                {"201": meta},
                "400 401 403 409 413",
                body=_ref("SecretCreate"),
            ),
            "get": _op(
                "listSecrets",
                "List secrets (metadata only), keyset-paginated by name",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["secrets", "next"],
                            "properties": {
                                "secrets": {"type": "array", "items": _ref("SecretMeta")},
                                "next": {"type": ["string", "null"]},
                            },
                        },
                        "a page of metadata",
                    )
                },
                "400 401 403 404",
                params=[
                    _query(
                        "prefix",
                        {"type": "string", "maxLength": 200, "pattern": SAFE_LINE},
                        "only names starting with this",
                    ),
                    _query(
                        "after",
                        {"type": "string", "pattern": CURSOR_PATTERN},
                        "the opaque 'next' cursor of the previous page (bound to the token and "
                        "the listing; one this agent did not issue for them is a 404)",
                    ),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 1000},
                        "page size (100)",
                    ),
                    _query("deleted", {"type": "boolean"}, "list soft-deleted secrets instead"),
                ],
            ),
        },
        "/api/v1/secrets/{id}": {
            "parameters": [SECRET_ID],
            "get": _op(
                "readSecret",
                "Read a secret's value (current, or ?version=N)",
                {"200": _json(_ref("SecretValue"), "the value and its metadata")},
                "400 401 403 404",
                params=[
                    _query(
                        "version",
                        {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
                        "an older version",
                    )
                ],
            ),
            "put": _op(
                "updateSecret",
                "Update: a new version when value is given",
                {"200": meta},
                "400 401 403 404 409 413",
                body=_ref("SecretUpdate"),
            ),
            "delete": _op("deleteSecret", "Soft-delete a secret", {"200": meta}, "401 403 404 409"),
        },
        "/api/v1/secrets/{id}/rotate": {
            "parameters": [SECRET_ID],
            "post": _op(
                "rotateSecret",
                "New value: the governing rotation policy's rotator in two phases (409 "
                "rotation_failed leaves the value unchanged), else random (rules optional)",
                {"200": meta},
                "400 401 403 404 409 413",
                body=_ref("Generator"),
            ),
        },
        "/api/v1/secrets/{id}/versions": {
            "parameters": [SECRET_ID],
            "get": _op(
                "secretVersions",
                "Version history (no values)",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["id", "versions"],
                            "properties": {
                                "id": {"type": "string"},
                                "versions": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["version", "created_at", "origin", "current"],
                                        "properties": {
                                            "version": {"type": "integer"},
                                            "created_at": {"type": "string"},
                                            "origin": {"enum": ["create", "update", "rotate"]},
                                            "current": {"type": "boolean"},
                                        },
                                    },
                                },
                            },
                        },
                        "versions",
                    )
                },
                "401 403 404",
            ),
        },
        "/api/v1/secrets/{id}/undelete": {
            "parameters": [SECRET_ID],
            "post": _op(
                "undeleteSecret",
                "Bring back a soft-deleted secret",
                {"200": meta},
                "401 403 404 409",
            ),
        },
        "/api/v1/secrets/{id}/destroy": {
            "parameters": [SECRET_ID],
            "post": _op(
                "destroySecret",
                "Erase a deleted secret and all its versions",
                {"200": meta},
                "401 403 404 409",
            ),
        },
        "/api/v1/health": {
            "get": _op(
                "health",
                "Liveness and state",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["status", "version", "vault_id"],
                            "properties": {
                                "status": {"type": "string"},
                                "version": {"type": "string"},
                                "vault_id": {"type": "string"},
                                "uptime_seconds": {"type": "number"},
                                "storage": {"type": "string"},
                                "kek_version": {"type": "integer"},
                                "audit_seq": {"type": "integer"},
                                "uplink": UPLINK_STATUS,
                            },
                        },
                        "healthy",
                    )
                },
                "",
                secure=False,
            ),
        },
        "/api/v1/metrics": {
            "get": _op(
                "metrics",
                "Prometheus metrics",
                {
                    "200": {
                        "description": "text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                "401",
            ),
        },
        "/api/v1/openapi.json": {
            "get": _op(
                "openapi",
                "This document",
                {"200": _json({"type": "object"}, "OpenAPI 3.1")},
                "",
                secure=False,
            ),
        },
        "/api/v1/sys/tokens": {
            "post": _op(
                "createToken",
                "Mint a token (its secret is shown once)",
                {
                    "201": _json(
                        {
                            "type": "object",
                            "required": ["token", "info"],
                            "properties": {"token": {"type": "string"}, "info": _ref("TokenInfo")},
                        },
                        "the new token",
                    )
                },
                "400 401 403 413",
                body={
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name", "policy"],
                    "properties": {
                        "name": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 100,
                            "pattern": SAFE_LINE,
                        },
                        "policy": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 100,
                            "items": _ref("Rule"),
                        },
                        "ttl_seconds": {"type": "integer", "minimum": 60, "maximum": 315360000},
                    },
                },
            ),
            "get": _op(
                "listTokens",
                "Every token's description",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["tokens"],
                            "properties": {"tokens": {"type": "array", "items": _ref("TokenInfo")}},
                        },
                        "tokens",
                    )
                },
                "401 403",
            ),
        },
        "/api/v1/sys/tokens/{token_id}": {
            "parameters": [_path_param("token_id", "the token's id (tok_…)")],
            "delete": _op(
                "revokeToken",
                "Revoke a token",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["revoked"],
                            "properties": {"revoked": {"type": "string"}},
                        },
                        "revoked",
                    )
                },
                "401 403 404",
            ),
        },
        "/api/v1/sys/keys": {
            "get": _op(
                "keyStatus",
                "KEKs and how many values each wraps",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["active", "keks"],
                            "properties": {
                                "active": {"type": "integer"},
                                "keks": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "version": {"type": "integer"},
                                            "state": {"type": "string"},
                                            "created_at": {"type": "string"},
                                            "values": {"type": "integer"},
                                        },
                                    },
                                },
                            },
                        },
                        "keys",
                    )
                },
                "401 403",
            ),
        },
        "/api/v1/sys/keys/rotate": {
            "post": _op(
                "rotateKek",
                "Start an online KEK rotation",
                {"202": _json(_ref("Job"), "the job")},
                "401 403 409",
            ),
        },
        "/api/v1/sys/keys/rekey": {
            "post": _op(
                "rekey",
                "Change the master key",
                {"202": _json(_ref("Job"), "the job")},
                "400 401 403 409 413",
                body={
                    "type": "object",
                    "additionalProperties": False,
                    "description": "Exactly one of new_key_file or new_passphrase.",
                    "oneOf": [{"required": ["new_key_file"]}, {"required": ["new_passphrase"]}],
                    "properties": {
                        "new_key_file": {
                            "type": "string",
                            "minLength": 2,
                            "description": "Absolute path of an existing 32-byte key file on "
                            "the agent's host (raw, hex or base64); agent.yaml is updated to it.",
                        },
                        "new_passphrase": {
                            "type": "string",
                            "minLength": 12,
                            "pattern": SAFE_LINE,
                            "description": "Printable text (no control or invisible format "
                            "characters); the next start needs KEYVAULT_MASTER_PASSPHRASE.",
                        },
                        "iterations": {"type": "integer", "minimum": 100000, "maximum": 10000000},
                    },
                },
            ),
        },
        "/api/v1/auth/jwt": {
            "post": _op(
                "jwtLogin",
                "Trade a workload's JWT for a short-lived token within a role (no bearer token; "
                "mutual TLS as everywhere)",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["token", "token_id", "expires_at", "policy"],
                            "properties": {
                                "token": {"type": "string"},
                                "token_id": {"type": "string"},
                                "expires_at": {"type": "string"},
                                "policy": {
                                    "type": "object",
                                    "additionalProperties": {
                                        "type": "array",
                                        "items": {"type": "string"},
                                    },
                                },
                            },
                        },
                        "the minted token (shown once)",
                    )
                },
                "400 401 413",
                body={
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["role", "jwt"],
                    "properties": {
                        "role": {
                            "type": "string",
                            "pattern": JWT_NAME_PATTERN,
                            "description": "a role of auth.jwt.roles",
                        },
                        "jwt": {
                            "type": "string",
                            "pattern": JWS_PATTERN,
                            "maxLength": MAX_JWT_BYTES,
                            "description": "a compact JWS",
                        },
                    },
                },
                secure=False,
            ),
        },
        "/api/v1/changes": {
            "get": _op(
                "changeStream",
                "Server-Sent Events: changes (name, id, version, event; never values) to secrets "
                "the token may read",
                {
                    "200": {
                        "description": "an endless event stream; a comment every 15 s",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    }
                },
                "400 401",
                params=[
                    _query(
                        "names",
                        {"type": "string", "minLength": 1},
                        "comma-separated names or ids to follow (default: every readable one)",
                    )
                ],
            ),
        },
        "/api/v1/sys/jobs/{job_id}": {
            "parameters": [_path_param("job_id", "the job's id")],
            "get": _op(
                "jobStatus",
                "A job's progress",
                {"200": _json(_ref("Job"), "the job")},
                "401 403 404",
            ),
        },
    }


@cache
def openapi_document() -> J:
    """The whole OpenAPI 3.1 document."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "KeyVault agent API", "version": "1"},
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": _paths(),
    }
