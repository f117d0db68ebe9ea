"""Building blocks of the control plane's OpenAPI document, shared by its parts (`openapi`, `openapi_users`)."""

from __future__ import annotations

from typing import Any

J = dict[str, Any]
STR: J = {"type": "string"}
NSTR: J = {"type": ["string", "null"]}
INT: J = {"type": "integer"}

ERRORS = {
    "400": "invalid request",
    "401": "missing, unknown, expired or revoked session token",
    "403": "your role does not allow this",
    "404": "no such object in your organisation",
    "409": "conflicts with the current state",
    "413": "body too large",
    "429": "too many failed attempts; see Retry-After",
    "503": "a dependency is unavailable",
}


def _ref(name: str) -> J:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: J, description: str) -> J:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _obj(props: J, required: list[str] | None = None, extra: bool = False) -> J:
    doc: J = {"type": "object", "properties": props, "additionalProperties": extra}
    if required:
        doc["required"] = required
    return doc


def _page(item: str, cursor: str = "next_cursor") -> J:
    return _obj({"items": {"type": "array", "items": _ref(item)}, cursor: NSTR}, ["items", cursor])


def _op(
    op_id: str,
    summary: str,
    ok: dict[str, J],
    errors: str = "",
    *,
    body: J | None = None,
    params: list[J] | None = None,
    secure: bool = True,
) -> J:
    responses = dict(ok)
    for code in ("400", "500", *errors.split()):
        if code == "500":
            continue
        responses[code] = _json(_ref("Error"), ERRORS[code])
    if secure:
        responses["401"] = _json(_ref("Error"), ERRORS["401"])
        responses["403"] = _json(_ref("Error"), ERRORS["403"])
    responses["503"] = _json(_ref("Error"), ERRORS["503"])
    doc: J = {"operationId": op_id, "summary": summary, "responses": responses}
    if params:
        doc["parameters"] = params
    if body is not None:
        doc["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    doc["security"] = [{"session": []}] if secure else []
    return doc


def _path(name: str) -> J:
    return {"name": name, "in": "path", "required": True, "schema": {**STR, "maxLength": 200}}


def _q(name: str, schema: J) -> J:
    return {"name": name, "in": "query", "required": False, "schema": schema}
