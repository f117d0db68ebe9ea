"""A stand-in for the control plane's command and inventory routes, to the spec in the brief
(``POST/GET /vaults/{id}/commands``, ``GET /commands/{id}``, ``GET /vaults/{id}/inventory``),
shaped like the real ones (``cursor`` paging, ``result`` = the agent's message).

It lets the client and CLI be tested where driving the real control plane is awkward (a command
that never finishes, many pages); the same flows also run against the real control plane.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from common.metadata_key import MetadataKey

TOKEN = "kvs_stub-token"
NOW = "2025-01-01T00:00:00Z"


@dataclass
class FleetStub:
    """State of the stub: one vault, its inventory, the commands sent to it."""

    vault_id: str = "vlt_stub"
    key: MetadataKey | None = None
    inventory: list[dict[str, Any]] = field(default_factory=list)
    commands: dict[str, dict[str, Any]] = field(default_factory=dict)
    polls_until_done: int = 2
    outcome: str = "succeeded"
    seen_bodies: list[Any] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def add_secrets(self, names: list[str | None], key: MetadataKey | None = None) -> None:
        """Inventory items; a name is sealed with ``key`` (None name: no label)."""
        for name in names:
            secret_id = f"sec_{len(self.inventory):04d}"
            label = key.seal(self.vault_id, secret_id, {"name": name}) if key and name else None
            self.inventory.append(
                {
                    "secret_id": secret_id,
                    "version": 1,
                    "created_at": NOW,
                    "updated_at": NOW,
                    "deleted_at": None,
                    "policy_id": None,
                    "rotation": {"state": "ok", "last_rotated_at": NOW, "next_due_at": None},
                    "label": label,
                    "reported_at": NOW,
                }
            )

    def app(self) -> web.Application:
        """The aiohttp app."""
        app = web.Application(middlewares=[self._auth])
        base = "/api/v1"
        app.router.add_get(base + "/vaults", self._vaults)
        app.router.add_get(base + "/vaults/{vault_id}", self._one_vault)
        app.router.add_post(base + "/vaults/{vault_id}/commands", self._create)
        app.router.add_get(base + "/vaults/{vault_id}/commands", self._list)
        app.router.add_get(base + "/commands/{command_id}", self._get)
        app.router.add_get(base + "/vaults/{vault_id}/inventory", self._inventory)
        return app

    @staticmethod
    def _error(status: int, code: str, message: str) -> web.Response:
        return web.json_response({"error": {"code": code, "message": message}}, status=status)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._error(
                401, "unauthenticated", "the session token is unknown, expired or revoked"
            )
        return await handler(request)  # type: ignore[no-any-return]

    def _vault(self, request: web.Request) -> web.Response | None:
        if request.match_info["vault_id"] != self.vault_id:
            return self._error(404, "not_found", f"no vault {request.match_info['vault_id']}")
        return None

    def _vault_doc(self) -> dict[str, Any]:
        return {"id": self.vault_id, "name": "stub", "status": "online"}

    async def _vaults(self, request: web.Request) -> web.Response:
        return web.json_response({"items": [self._vault_doc()], "next_cursor": None})

    async def _one_vault(self, request: web.Request) -> web.Response:
        return self._vault(request) or web.json_response(self._vault_doc())

    async def _create(self, request: web.Request) -> web.Response:
        missing = self._vault(request)
        if missing:
            return missing
        body = await request.json()
        self.seen_bodies.append(body)
        sealed = "intent" in body  # like the control plane: stored and shown as it came
        if not sealed and body.get("command") not in ("rotate", "resync"):
            return self._error(400, "invalid_request", "command must be rotate or resync")
        cmd_id = f"cmd_{next(self._ids)}"
        self.commands[cmd_id] = {
            "id": cmd_id,
            "vault_id": self.vault_id,
            "command": "sealed" if sealed else body["command"],
            "args": {} if sealed else body.get("args", {}),
            **({"intent": body["intent"]} if sealed else {}),
            "state": "pending",
            "result": None,
            "created_at": NOW,
            "updated_at": NOW,
            "_polls": 0,
        }
        return web.json_response(self._public(self.commands[cmd_id]), status=202)

    @staticmethod
    def _public(cmd: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in cmd.items() if not k.startswith("_")}

    async def _list(self, request: web.Request) -> web.Response:
        missing = self._vault(request)
        if missing:
            return missing
        items = [self._public(c) for c in self.commands.values()]
        return web.json_response({"items": items, "next_cursor": None})

    async def _get(self, request: web.Request) -> web.Response:
        cmd = self.commands.get(request.match_info["command_id"])
        if cmd is None:
            return self._error(404, "not_found", "no such command")
        cmd["_polls"] += 1
        if cmd["state"] in ("pending", "sent"):
            cmd["state"] = "sent"
            if cmd["_polls"] >= self.polls_until_done:
                cmd["state"] = self.outcome
                ok = self.outcome == "succeeded"
                cmd["result"] = "rotated to version 2" if ok else "the rotator refused"
        return web.json_response(self._public(cmd))

    async def _inventory(self, request: web.Request) -> web.Response:
        missing = self._vault(request)
        if missing:
            return missing
        after = request.query.get("cursor")
        limit = int(request.query.get("limit", "100"))
        items = [i for i in self.inventory if after is None or i["secret_id"] > after][:limit]
        more = items and items[-1]["secret_id"] != self.inventory[-1]["secret_id"]
        return web.json_response(
            {"items": items, "next_cursor": items[-1]["secret_id"] if more else None}
        )
