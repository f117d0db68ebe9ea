"""Views: enrollment tokens, registration, the vault registry, the CA and its CRL."""

from __future__ import annotations

from aiohttp import web

from common.errors import ValidationError
from control_plane.views.context import GATEWAY_ADDRESS, cp_of, target, who
from serverkit.body import json_object, query, query_int, string

MIN_TTL, MAX_TTL = 10, 7 * 86400  # an enrollment token's lifetime (seconds)


async def create_token(request: web.Request) -> web.Response:
    """POST /enrollment-tokens {description?, ttl_seconds?} → the token (shown once)."""
    doc = await json_object(request, {"description", "ttl_seconds"})
    ttl = doc.get("ttl_seconds")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int)):
        raise ValidationError("ttl_seconds must be a whole number")
    if ttl is not None and not MIN_TTL <= ttl <= MAX_TTL:
        raise ValidationError(f"ttl_seconds must be from {MIN_TTL} to {MAX_TTL}")
    description = string(doc, "description", low=0) or ""
    result = await cp_of(request).vaults.create_token(who(request), description, ttl)
    target(request, result["id"])
    # the address agents enroll through, so the apps print a command that works as shown
    result["gateway_url"] = request.app.get(GATEWAY_ADDRESS) or None
    return web.json_response(result, status=201)


async def list_tokens(request: web.Request) -> web.Response:
    """GET /enrollment-tokens."""
    return web.json_response({"items": await cp_of(request).vaults.list_tokens(who(request))})


async def revoke_token(request: web.Request) -> web.Response:
    """DELETE /enrollment-tokens/{token_id}."""
    token_id = target(request, request.match_info["token_id"])
    return web.json_response(await cp_of(request).vaults.revoke_token(who(request), token_id))


async def register(request: web.Request) -> web.Response:
    """POST /vaults/register {token, csr, name, agent_version} → identity and certificates."""
    fields = {"token", "csr", "name", "agent_version"}
    doc = await json_object(request, fields, frozenset(fields))
    for key in fields:
        string(doc, key, high=8192)
    identity, new = await cp_of(request).vaults.register(
        doc["token"], doc["csr"], doc["name"], doc["agent_version"]
    )
    target(request, identity["vault_id"])
    return web.json_response(identity, status=201 if new else 200)


async def list_vaults(request: web.Request) -> web.Response:
    """GET /vaults?limit=&cursor= — keyset-paginated, with live status."""
    q = query(request, {"limit", "cursor"})
    limit = query_int(q, "limit", 100, 1, 500)
    page = await cp_of(request).vaults.list(who(request), after=q.get("cursor"), limit=limit)
    return web.json_response(page)


async def get_vault(request: web.Request) -> web.Response:
    """GET /vaults/{vault_id}."""
    vault_id = target(request, request.match_info["vault_id"])
    return web.json_response(await cp_of(request).vaults.get(who(request), vault_id))


async def revoke_vault(request: web.Request) -> web.Response:
    """POST /vaults/{vault_id}/revoke — revokes its certificate."""
    vault_id = target(request, request.match_info["vault_id"])
    return web.json_response(await cp_of(request).vaults.revoke(who(request), vault_id))


async def get_ca(request: web.Request) -> web.Response:
    """GET /ca — the organisation's CA certificate and pin."""
    return web.json_response(await cp_of(request).vaults.ca_info(who(request).org_id))


async def get_crl(request: web.Request) -> web.Response:
    """GET /ca/crl — the organisation's CRL (PEM)."""
    pem = await cp_of(request).vaults.crl(who(request).org_id)
    return web.Response(body=pem, content_type="application/x-pem-file")
