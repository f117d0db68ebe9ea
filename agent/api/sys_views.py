"""HTTP views for health, metrics, the OpenAPI document, tokens, keys and jobs."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from agent.api.context import AGENT, audit_target, token_of
from agent.api.openapi import openapi_document
from agent.auth import TOKEN_ID_RE, Policy
from agent.crypto import KDF_DEFAULT_ITERATIONS, KDF_MIN_ITERATIONS
from agent.grants import uncovered
from agent.jobs import Progress
from agent.rekey import PendingConfig, new_key_source
from common.errors import (
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from serverkit.body import json_object, typed


async def health(request: web.Request) -> web.Response:
    """GET /api/v1/health — liveness and a little state; no authentication."""
    agent = request.app[AGENT]
    seq, _ = agent.audit.head
    return web.json_response(
        {
            "status": "healthy",
            "version": agent.version,
            "vault_id": agent.keys.vault_id,
            "uptime_seconds": round(agent.uptime, 3),
            "storage": agent.store.backend,
            "kek_version": agent.keys.active_kek,
            "audit_seq": seq,
            "audit": agent.audit_guard.state.to_json(),
            "uplink": agent.uplink.to_json(seq),
        }
    )


async def metrics(request: web.Request) -> web.Response:
    """GET /api/v1/metrics — Prometheus text; any valid token may scrape."""
    agent = request.app[AGENT]
    token_of(request)
    gauges = {
        "keyvault_secrets": float(await agent.secrets.count()),
        "keyvault_kek_version": float(agent.keys.active_kek),
        "keyvault_audit_seq": float(agent.audit.head[0]),
        "keyvault_uptime_seconds": agent.uptime,
    }
    return web.Response(
        text=agent.metrics.render(gauges),
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


async def openapi(request: web.Request) -> web.Response:
    """GET /api/v1/openapi.json — the exact description of this API."""
    return web.json_response(openapi_document())


# ------------------------------------------------------------------ tokens


async def create_token(request: web.Request) -> web.Response:
    """POST /api/v1/sys/tokens — mint a token; its secret is in this response only."""
    agent = request.app[AGENT]
    token_of(request).require("admin", "sys/tokens")
    doc = await json_object(
        request, {"name", "policy", "ttl_seconds"}, frozenset({"name", "policy"})
    )
    policy = Policy.parse(doc["policy"])
    beyond = uncovered(policy, token_of(request).policy)
    if beyond:
        shown = ", ".join(f"{r.path}:{','.join(sorted(r.capabilities))}" for r in beyond[:3])
        raise PermissionDeniedError(
            f"a token can only mint tokens within its own rights; this one does not hold {shown}"
        )
    ttl = typed(doc, "ttl_seconds", int, "a whole number of seconds")
    if ttl is not None and not 60 <= ttl <= 10 * 365 * 86400:
        raise ValidationError("ttl_seconds must be from 60 to 315360000 (ten years)")
    name = typed(doc, "name", str, "a string")
    secret, token = await agent.tokens.create(name, policy, timedelta(seconds=ttl) if ttl else None)
    audit_target(request, token.id)
    return web.json_response(
        {"token": secret, "info": token.to_json()},
        status=201,
        headers={"Cache-Control": "no-store"},
    )


async def list_tokens(request: web.Request) -> web.Response:
    """GET /api/v1/sys/tokens — every token's description (never a secret)."""
    token_of(request).require("admin", "sys/tokens")
    return web.json_response(
        {"tokens": [t.to_json() for t in await request.app[AGENT].tokens.list()]}
    )


async def revoke_token(request: web.Request) -> web.Response:
    """DELETE /api/v1/sys/tokens/{token_id}."""
    token_of(request).require("admin", "sys/tokens")
    token_id = request.match_info["token_id"]
    audit_target(request, token_id)
    if not TOKEN_ID_RE.fullmatch(token_id):
        raise NotFoundError(f"no token with id {token_id!r}")
    token = await request.app[AGENT].tokens.revoke(token_id)
    return web.json_response({"revoked": token.id})


# ------------------------------------------------------------------ keys and jobs


async def key_status(request: web.Request) -> web.Response:
    """GET /api/v1/sys/keys — KEKs with state and usage counts."""
    agent = request.app[AGENT]
    token_of(request).require("admin", "sys/keys")
    return web.json_response(
        {"active": agent.keys.active_kek, "keks": await agent.keys.kek_status()}
    )


async def rotate_kek(request: web.Request) -> web.Response:
    """POST /api/v1/sys/keys/rotate — start an online KEK rotation; poll the job."""
    agent = request.app[AGENT]
    token_of(request).require("admin", "sys/keys")

    async def work(progress: Progress) -> dict[str, Any]:
        done = await agent.keys.rotate_kek(progress)
        return {
            "new_version": done.new_version,
            "rewrapped": done.rewrapped,
            "destroyed": done.destroyed,
        }

    _refuse_if_busy(request)
    job = agent.jobs.start("rotate-kek", work)
    return web.json_response(job.to_json(), status=202)


async def rekey(request: web.Request) -> web.Response:
    """POST /api/v1/sys/keys/rekey — change the master key (a key file on this host, or a passphrase)."""
    agent = request.app[AGENT]
    token_of(request).require("admin", "sys/keys")
    doc = await json_object(request, {"new_key_file", "new_passphrase", "iterations"})
    path = typed(doc, "new_key_file", str, "a path on the agent's host")
    phrase = typed(doc, "new_passphrase", str, "a string")
    iterations = typed(doc, "iterations", int, "a whole number") or KDF_DEFAULT_ITERATIONS
    if iterations < KDF_MIN_ITERATIONS or iterations > 10_000_000:
        raise ValidationError(f"iterations must be from {KDF_MIN_ITERATIONS:,} to 10,000,000")
    source = new_key_source(path, phrase)
    if agent.settings.workers > 1:
        raise ConflictError(
            f"rekey changes the master key, which each of this agent's {agent.settings.workers} "
            "worker processes holds in memory, and the others cannot follow a new key file or "
            "passphrase: set workers: 1 in agent.yaml, restart the agent, rekey, then set "
            "workers back and restart again"
        )
    _refuse_if_busy(request)
    pending = PendingConfig(agent.settings.data_dir)

    async def work(progress: Progress) -> dict[str, Any]:
        progress(0, 1)
        tracked = pending.prepare(Path(path) if path is not None else None)
        try:
            await agent.keys.rekey(source, iterations=iterations)
        except BaseException:
            pending.abandon()
            raise
        if tracked:
            pending.commit()
        progress(1, 1)
        return {"kdf": "pbkdf2-sha256" if phrase else "keyfile", "config_updated": tracked}

    job = agent.jobs.start("rekey", work)
    return web.json_response(job.to_json(), status=202)


def _refuse_if_busy(request: web.Request) -> None:
    if request.app[AGENT].keys.rotating:
        raise ConflictError(
            "a key rotation or rekey is already running; wait for its job to finish"
        )


async def job_status(request: web.Request) -> web.Response:
    """GET /api/v1/sys/jobs/{job_id}."""
    token_of(request).require("admin", "sys/keys")
    return web.json_response(request.app[AGENT].jobs.get(request.match_info["job_id"]).to_json())
