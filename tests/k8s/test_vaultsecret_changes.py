"""Following the agent's change stream (``GET /api/v1/changes``, server-sent events with
``{"name", "id", "version", "event"}``) against a local aiohttp server implementing that
contract, and the timer syncing as soon as the stream reports a change."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import kopf
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from k8s_operator import vaultsecret_handlers as handlers
from k8s_operator.secret_sync import StaticToken, SyncError, follow_changes
from tests.k8s.recorded_api import RecordedApiServer
from tests.k8s.test_vaultsecret_sync import Vault, vault_secret

LOG = logging.getLogger("test.k8s.vaultsecret.changes")


def _event(name: str, version: int, kind: str = "updated") -> bytes:
    doc = {"name": name, "id": f"sec_{version:04d}", "version": version, "event": kind}
    return f"event: change\ndata: {json.dumps(doc)}\n\n".encode()


class Stream:
    """The change-stream contract: answers 401 without the right token, else ``parts``."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.status = 200

    async def changes(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != "Bearer kvt_stream":
            return web.json_response(
                {"error": {"code": "unauthenticated", "message": "unknown token"}}, status=401
            )
        if self.status != 200:
            return web.json_response(
                {"error": {"code": "not_found", "message": "no such route"}}, status=self.status
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for part in self.parts:
            await resp.write(part)
        await resp.write_eof()
        return resp


@pytest.fixture
async def stream() -> AsyncIterator[tuple[Stream, httpx.AsyncClient]]:
    state = Stream()
    app = web.Application()
    app.router.add_get("/api/v1/changes", state.changes)
    server = TestServer(app)
    await server.start_server()
    async with httpx.AsyncClient(base_url=str(server.make_url(""))) as client:
        yield state, client
    await server.close()


async def test_only_listed_secrets_are_reported(stream: tuple[Stream, httpx.AsyncClient]) -> None:
    state, client = stream
    state.parts = [
        b": keep-alive\n\n",
        _event("other/thing", 3),
        _event("shop/db/password", 7)[:25],  # one event cut across two writes
        _event("shop/db/password", 7)[25:],
        b"data: not json\n\n",
        b'data: {"id": "sec_1"}\n\n',
        _event("shop/payments/api-key", 2, "rotated").replace(b"\n", b"\r\n"),
    ]
    seen: list[str] = []
    await follow_changes(
        client,
        "https://a",
        "kvt_stream",
        {"shop/db/password", "shop/payments/api-key"},
        seen.append,
    )
    assert seen == ["shop/db/password", "shop/payments/api-key"]


async def test_refusals_are_named(stream: tuple[Stream, httpx.AsyncClient]) -> None:
    state, client = stream
    with pytest.raises(SyncError) as raised:
        await follow_changes(client, "https://a", "kvt_wrong", {"x"}, print)
    assert raised.value.reason == "Unauthorized" and "unknown token" in raised.value.message
    state.status = 404
    with pytest.raises(SyncError) as raised:
        await follow_changes(client, "https://a", "kvt_stream", {"x"}, print)
    assert raised.value.reason == "NoChangeStream"


async def test_an_oversized_event_is_refused(stream: tuple[Stream, httpx.AsyncClient]) -> None:
    state, client = stream
    state.parts = [b"data: " + b"x" * (70 << 10)]
    with pytest.raises(SyncError, match="over 64 KiB"):
        await follow_changes(client, "https://a", "kvt_stream", {"x"}, print)


async def test_a_reported_change_makes_the_timer_sync_before_the_interval() -> None:
    server = RecordedApiServer()
    for name, kind, data in (
        ("production-vault-ca", "Opaque", {"ca.crt": "LS0t"}),
        ("keyvault-operator-client", "kubernetes.io/tls", {"tls.crt": "LS0t", "tls.key": "LS0t"}),
    ):
        server.put(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": "default", "uid": name},
                "type": kind,
                "data": data,
            }
        )
    vault = Vault(shop__db__password="one", shop__payments__api_key="k")
    memo = kopf.Memo(api=server.api(), agent_login=StaticToken("kvt_x"), agent_reader=vault.read)
    body = vault_secret()
    patch = kopf.Patch()
    await handlers.refresh(body=body, patch=patch, memo=memo, logger=LOG)  # never synced: due
    body["status"] = dict(patch["status"])
    assert len(vault.reads) == 1
    assert not handlers.due(body, datetime.now(UTC))  # synced just now: the poll waits 60 s
    await handlers.refresh(body=body, patch=kopf.Patch(), memo=memo, logger=LOG)
    assert len(vault.reads) == 1
    memo.vaultsecret_changed.add(body["metadata"]["uid"])  # what watch_changes does
    vault.values["shop/db/password"] = "two"
    await handlers.refresh(body=body, patch=kopf.Patch(), memo=memo, logger=LOG)
    assert len(vault.reads) == 2
    assert server.count("apply", "Secret") == 2
    assert memo.vaultsecret_changed == set()
