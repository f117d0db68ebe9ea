"""Webhooks on change, end to end: a real agent process (mutual TLS) POSTs signed notices to a
real aiohttp receiver, which checks them with the documented ``common.webhooks.verify``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, web

from common.client import AsyncAgentClient
from common.errors import AuthenticationError
from common.webhooks import ReplayCache, verify
from tests.conftest import init_agent_dir, start_agent

SECRET = "whsec-test-0123456789"


async def test_signed_notices_without_values_and_replay_refused(
    tmp_path: Path, aiohttp_server: Any
) -> None:
    seen = ReplayCache()
    notices: list[dict[str, Any]] = []
    refused: list[str] = []
    raw: list[tuple[bytes, list[tuple[str, str]]]] = []
    flaky = {"left": 1}  # the first delivery fails: the agent retries

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        if flaky["left"]:
            flaky["left"] -= 1
            return web.Response(status=503)
        try:
            verify(SECRET, request.headers, body, seen=seen)
        except AuthenticationError as exc:
            refused.append(exc.message)
            return web.Response(status=401)
        raw.append((body, list(request.headers.items())))
        notices.append(json.loads(body))
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/kv", hook)
    server = await aiohttp_server(receiver)
    folder = init_agent_dir(tmp_path / "agent", client_cert="required")
    with (folder.path / "agent.yaml").open("a") as fh:
        fh.write(
            f"webhooks:\n  - url: {server.make_url('/kv')}\n    secret_env: KV_HOOK_SECRET\n"
            "    names: ['app/**']\n    timeout_s: 2\n"
        )
    running = await asyncio.to_thread(start_agent, folder, env={"KV_HOOK_SECRET": SECRET})
    tls = folder.tls
    try:
        async with AsyncAgentClient(
            running.url,
            folder.token,
            ca_file=tls / "ca.crt",
            cert_file=tls / "client.crt",
            key_file=tls / "client.key",
        ) as kv:
            made = await kv.create("app/db", "value-one-s3cr3t")
            await kv.create("other/x", "value-two-s3cr3t")  # not in names: no notice
            await kv.rotate("app/db")
            for _ in range(300):
                if len(notices) >= 2:
                    break
                await asyncio.sleep(0.02)
        assert [(n["event"], n["name"], n["version"]) for n in notices] == [
            ("created", "app/db", 1),
            ("rotated", "app/db", 2),
        ]
        first = notices[0]
        assert set(first) == {"event", "name", "id", "version", "vault", "at"}
        assert first["id"] == made["id"] and first["vault"].startswith("vlt_")
        assert not any("s3cr3t" in json.dumps(n) for n in notices)
        # replaying a captured notice is refused by the helper
        body, headers = raw[0]
        resent = [(k, v) for k, v in headers if k.lower() not in ("host", "content-length")]
        async with ClientSession() as session:
            async with session.post(server.make_url("/kv"), data=body, headers=resent) as resp:
                assert resp.status == 401
        assert refused == ["this notice was already received (replay refused)"]
    finally:
        await asyncio.to_thread(running.stop)
    assert "value-one" not in (folder.path / "agent.log").read_text()


def test_a_missing_signing_secret_stops_the_start_with_a_clear_error(tmp_path: Path) -> None:
    folder = init_agent_dir(tmp_path / "agent")
    with (folder.path / "agent.yaml").open("a") as fh:
        fh.write("webhooks:\n  - url: http://127.0.0.1:9/kv\n    secret_env: KV_HOOK_UNSET\n")
    try:
        start_agent(folder, timeout=20)
    except RuntimeError as exc:
        assert "KV_HOOK_UNSET is empty or unset" in str(exc)
    else:
        raise AssertionError("the agent started without its webhook secret")
