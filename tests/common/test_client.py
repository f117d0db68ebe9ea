"""The workload client against a real agent process over mutual TLS: sync, async, errors."""

from __future__ import annotations

import pytest

from common.client import AgentClient, AsyncAgentClient
from common.errors import AuthenticationError, NotFoundError, UnavailableError, ValidationError
from tests.conftest import AgentProcess


async def test_async_and_sync_clients(agent_process: AgentProcess) -> None:
    tls = agent_process.dir.tls
    async with AsyncAgentClient(
        agent_process.url,
        agent_process.dir.token,
        ca_file=tls / "ca.crt",
        cert_file=tls / "client.crt",
        key_file=tls / "client.key",
    ) as kv:
        meta = await kv.create("svc/api-key", "async-value-1", "an API key", {"team": "core"})
        assert meta["version"] == 1
        assert (await kv.get("svc/api-key"))["value"] == "async-value-1"
        await kv.update(meta["id"], "async-value-2")
        assert (await kv.get(meta["id"], 1))["value"] == "async-value-1"
        page = await kv.list(prefix="svc/")
        assert [m["name"] for m in page["secrets"]] == ["svc/api-key"]
        with pytest.raises(NotFoundError, match="no secret"):
            await kv.get("svc/missing")
        with pytest.raises(ValidationError, match="name"):
            await kv.create("bad name", "x")
    with agent_process.client() as kv:
        assert kv.get("svc/api-key")["value"] == "async-value-2"
        assert "keyvault_requests_total" in kv.metrics()
        assert kv.health()["status"] == "healthy"
        assert agent_process.dir.token not in repr(kv)


def test_wrong_token_and_unreachable(agent_process: AgentProcess) -> None:
    with (
        agent_process.client("kvt_not_a_real_token_at_all_000000") as kv,
        pytest.raises(AuthenticationError),
    ):
        kv.list()
    tls = agent_process.dir.tls
    with AgentClient("https://127.0.0.1:1", "kvt_x", ca_file=tls / "ca.crt", timeout=2) as kv:
        with pytest.raises(
            UnavailableError, match=r"cannot reach the agent at https://127\.0\.0\.1:1"
        ):
            kv.list()


def test_a_server_that_is_not_an_agent_is_a_clear_error() -> None:
    """A 200 that is not JSON (some other web server at that address) is an UnavailableError
    naming the address and the fix, never a raw decoding error."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>not an agent</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with AgentClient(url, "kvt_x") as kv, pytest.raises(UnavailableError) as caught:
            kv.get("svc/api-key")
        message = str(caught.value)
        assert "not JSON" in message and url in message and "agent" in message
    finally:
        server.shutdown()
        server.server_close()
