"""HTTP views for ``/api/v1/secrets``: thin, over :class:`agent.secrets.SecretService`."""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii as _quote

from aiohttp import web

from agent.api.context import AGENT, audit_target, token_of
from agent.api.openapi import MAX_PER_CLASS
from agent.generate import GeneratorSpec
from agent.secrets import ID_RE, SecretMeta, validate_name
from agent.text import is_safe_line
from common.errors import NotFoundError, ValidationError
from serverkit.body import json_object, query_bool, query_int, reject_unknown_query, typed

# No name, id, cursor or description holds NUL, and PostgreSQL text refuses it: looked up, it
# would answer 503 "store unavailable" for what is the caller's mistake.
NUL = "\x00"
NO_STORE = {"Cache-Control": "no-store"}
VALUE = frozenset({"value"})  # a secret's value may hold any text; every other field may not
READ_PREFIXES = 4096  # encoded read-response heads kept (metadata only, never a value)


class ReadPrefixes:
    """The JSON of a read response up to its value, per (secret, version served), kept while
    the service hands out the same metadata object (``is``: a changed secret is a new object,
    so an entry is never stale). Holds metadata only; the value is encoded per request."""

    def __init__(self) -> None:
        self._heads: dict[tuple[str, int], tuple[SecretMeta, bytes]] = {}

    def body(self, meta: SecretMeta, served: int, value: str) -> bytes:
        """The whole response body, byte for byte what ``json.dumps`` of the dict gives."""
        key = (meta.id, served)
        hit = self._heads.get(key)
        if hit is None or hit[0] is not meta:
            doc = meta.to_json()
            doc["version"] = served
            doc["current_version"] = meta.version
            doc["value"] = ""
            head = json.dumps(doc)[: -len('""}')].encode()
            if len(self._heads) >= READ_PREFIXES:
                self._heads.clear()
            self._heads[key] = hit = (meta, head)
        return hit[1] + _quote(value).encode() + b"}"  # what json.dumps(value) gives, in C


READ_BODIES = web.AppKey("read_bodies", ReadPrefixes)


def _no_such_secret_if_nul(ref: str) -> None:
    if NUL in ref:
        raise NotFoundError(f"no secret {ref!r}")


def _description(doc: dict[str, object]) -> str | None:
    text: str | None = typed(doc, "description", str, "a string")
    if text is not None and NUL in text:
        raise ValidationError("description must not contain NUL characters")
    return text


async def _meta_for(
    request: web.Request, capability: str, *, include_deleted: bool = False
) -> SecretMeta:
    """Resolve ``{id}`` with one answer for "not yours" and "not there".

    By name the policy is checked *before* the lookup (403 whether or not it exists). By id the
    secret must be looked up first; one the token has no right on at all is answered exactly as
    a missing one (404, same message), and only then is its deleted state told. A token that
    holds some right on the name already knows it exists, so it gets the honest 403.
    """
    agent = request.app[AGENT]
    token = token_of(request)
    ref = request.match_info["id"]
    audit_target(request, ref)
    if not ID_RE.fullmatch(ref):
        token.require(capability, ref)
    _no_such_secret_if_nul(ref)
    meta = await agent.secrets.meta(ref, include_deleted=True)
    if not token.policy.sees(meta.name):
        raise NotFoundError(f"no secret {ref!r}")
    token.require(capability, meta.name)
    if meta.deleted_at and not include_deleted:
        raise NotFoundError(f"secret {ref!r} is deleted; undelete it first to use it")
    audit_target(request, meta.id)
    return meta


async def create_secret(request: web.Request) -> web.Response:
    """POST /api/v1/secrets — a new secret at version 1."""
    agent = request.app[AGENT]
    doc = await json_object(
        request,
        {"name", "value", "description", "labels"},
        frozenset({"name", "value"}),
        free_text=VALUE,
    )
    name = validate_name(doc["name"])
    token_of(request).require("write", name)
    meta = await agent.secrets.create(
        name,
        typed(doc, "value", str, "a string"),
        description=_description(doc) or "",
        labels=typed(doc, "labels", dict, "an object of strings") or {},
    )
    audit_target(request, meta.id)
    return web.json_response(meta.to_json(), status=201)


async def list_secrets(request: web.Request) -> web.Response:
    """GET /api/v1/secrets — metadata only, keyset-paginated by name."""
    agent = request.app[AGENT]
    token = token_of(request)
    reject_unknown_query(request, {"prefix", "after", "limit", "deleted"})
    prefix = request.query.get("prefix", "")
    if len(prefix) > 200 or not is_safe_line(prefix):
        raise ValidationError(
            "query parameter prefix must be at most 200 characters, without control characters"
        )
    deleted = query_bool(request.query, "deleted")
    items, nxt = await agent.secrets.list_page(
        prefix=prefix,
        after=request.query.get("after"),
        limit=query_int(request.query, "limit", 100, 1, 1000),
        deleted=deleted,
        visible=token.policy.patterns("list"),
        context=f"{token.id}|{prefix}|{deleted}",
    )
    visible = [m.to_json() for m in items if token.policy.allows("list", m.name)]
    return web.json_response({"secrets": visible, "next": nxt})


async def read_secret(request: web.Request) -> web.Response:
    """GET /api/v1/secrets/{id} — the value (current or ``?version=N``) and its metadata."""
    agent = request.app[AGENT]
    token = token_of(request)
    ref = request.match_info["id"]
    if len(request.query) and set(request.query) - {"version"}:
        reject_unknown_query(request, {"version"})
    version = (
        query_int(request.query, "version", 0, 1, 2**31 - 1) if "version" in request.query else None
    )
    if ID_RE.fullmatch(ref) or not token.policy.allows("read", ref):
        await _meta_for(request, "read")  # the one answer for "not yours" and "not there"
    _no_such_secret_if_nul(ref)
    audit_target(request, ref)
    meta, served, value = await agent.secrets.reveal(ref, version)
    token.require("read", meta.name)
    audit_target(request, meta.id)
    bodies = request.app[READ_BODIES]
    # Encoded straight to bytes: this is the hot path (docs/performance.md, benchmark 1).
    return web.Response(
        body=bodies.body(meta, served, value), content_type="application/json", headers=NO_STORE
    )


async def update_secret(request: web.Request) -> web.Response:
    """PUT /api/v1/secrets/{id} — a new version when ``value`` is given."""
    agent = request.app[AGENT]
    doc = await json_object(request, {"value", "description", "labels"}, free_text=VALUE)
    meta = await _meta_for(request, "write")
    new = await agent.secrets.update(
        meta.id,
        value=typed(doc, "value", str, "a string"),
        description=_description(doc),
        labels=typed(doc, "labels", dict, "an object of strings"),
    )
    return web.json_response(new.to_json())


async def delete_secret(request: web.Request) -> web.Response:
    """DELETE /api/v1/secrets/{id} — soft delete (undelete or destroy later)."""
    meta = await _meta_for(request, "delete")
    return web.json_response((await request.app[AGENT].secrets.delete(meta.id)).to_json())


async def undelete_secret(request: web.Request) -> web.Response:
    """POST /api/v1/secrets/{id}/undelete."""
    meta = await _meta_for(request, "delete", include_deleted=True)
    return web.json_response((await request.app[AGENT].secrets.undelete(meta.id)).to_json())


async def destroy_secret(request: web.Request) -> web.Response:
    """POST /api/v1/secrets/{id}/destroy — erase a deleted secret and every version."""
    meta = await _meta_for(request, "delete", include_deleted=True)
    return web.json_response((await request.app[AGENT].secrets.destroy(meta.id)).to_json())


async def rotate_secret(request: web.Request) -> web.Response:
    """POST /api/v1/secrets/{id}/rotate — a new value.

    A secret governed by a rotation policy is rotated by the policy's rotator through the
    engine (two phases; body rules ignored); any other gets a random value (rules optional).
    """
    agent = request.app[AGENT]
    allowed = {"mode", "length", "classes", "min_per_class", "exclude_lookalikes", "encoding"}
    doc = await json_object(request, allowed) if (await request.read()).strip() else {}
    classes = doc.get("classes")
    if isinstance(classes, list) and not all(isinstance(c, str) for c in classes):
        # GeneratorSpec.parse hashes each item; a nested object or list would be a 500 there
        raise ValidationError("generator.classes must be a list of class names (strings)")
    per_class = doc.get("min_per_class", 0)
    if isinstance(per_class, int) and not isinstance(per_class, bool) and per_class > MAX_PER_CLASS:
        raise ValidationError(f"generator.min_per_class must be from 0 to {MAX_PER_CLASS}")
    spec = GeneratorSpec.parse(doc)
    meta = await _meta_for(request, "rotate")
    engine = agent.rotation
    policy = await engine.governing(meta) if engine is not None else None
    if engine is not None and policy is not None:  # the policy's rotator, in two phases
        return web.json_response((await engine.rotate(meta.id, policy, actor=None)).to_json())
    return web.json_response((await agent.secrets.rotate(meta.id, spec)).to_json())


async def secret_versions(request: web.Request) -> web.Response:
    """GET /api/v1/secrets/{id}/versions — version history without values."""
    meta = await _meta_for(request, "read")  # a soft-deleted secret is 404 here as on GET
    return web.json_response(
        {"id": meta.id, "versions": await request.app[AGENT].secrets.versions(meta.id)}
    )
