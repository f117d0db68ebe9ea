"""Views: alerts, the audit log and usage analytics."""

from __future__ import annotations

from aiohttp import web

from control_plane.views.context import cp_of, target, who
from serverkit.body import INT32_MAX, query, query_int


async def list_alerts(request: web.Request) -> web.Response:
    """GET /alerts?state=&cursor=&limit=."""
    q = query(request, {"state", "cursor", "limit"})
    page = await cp_of(request).alerts.list(
        who(request).org_id,
        state=q.get("state"),
        after=q.get("cursor"),
        limit=query_int(q, "limit", 100, 1, 500),
    )
    return web.json_response(page)


async def acknowledge_alert(request: web.Request) -> web.Response:
    """POST /alerts/{alert_id}/acknowledge."""
    alert_id = target(request, request.match_info["alert_id"])
    return web.json_response(await cp_of(request).alerts.acknowledge(who(request), alert_id))


async def resolve_alert(request: web.Request) -> web.Response:
    """POST /alerts/{alert_id}/resolve."""
    alert_id = target(request, request.match_info["alert_id"])
    return web.json_response(await cp_of(request).alerts.resolve(who(request), alert_id))


async def query_audit(request: web.Request) -> web.Response:
    """GET /audit?after=&limit=&action=&source=&since=&until=&before= (before: newest first)."""
    q = query(request, {"after", "limit", "action", "source", "since", "until", "before"})
    page = await cp_of(request).audit.query(
        who(request).org_id,
        after=query_int(q, "after", 0, 0, INT32_MAX),  # cp_audit.seq is an INTEGER
        limit=query_int(q, "limit", 100, 1, 1000),
        action=q.get("action"),
        source=q.get("source"),
        since=q.get("since"),
        until=q.get("until"),
        before=query_int(q, "before", 0, 0, INT32_MAX) if "before" in q else None,
    )
    return web.json_response(page)


async def usage(request: web.Request) -> web.Response:
    """GET /analytics/usage?from=&to=&vault_id=."""
    q = query(request, {"from", "to", "vault_id"})
    result = await cp_of(request).audit.usage(
        who(request).org_id, start=q.get("from"), end=q.get("to"), vault_id=q.get("vault_id")
    )
    return web.json_response(result)
