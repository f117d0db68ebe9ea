"""The operator's JWT login to the agent, against a local aiohttp server implementing the
contract (``POST /api/v1/auth/jwt`` → ``{"token", "expires_at"}``, errors as
``{"error": {"code", "message"}}``): token reuse until 30 s before expiry, refusals, bad
answers, a missing service-account token, and answers cut at 1 MiB."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from k8s_operator.secret_sync import JwtLogin, SyncError, request_json

SA_JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6a2V5dmF1bHQtc3lzdGVtIn0.sig"


class Agent:
    """The login contract, counting logins; ``answer`` overrides the next answers."""

    def __init__(self) -> None:
        self.logins: list[dict[str, Any]] = []
        self.lifetime = timedelta(minutes=2)
        self.answer: web.Response | None = None

    async def login(self, request: web.Request) -> web.Response:
        doc = await request.json()
        self.logins.append(doc)
        if self.answer is not None:
            return self.answer
        if doc.get("jwt") != SA_JWT or doc.get("role") != "shop":
            return web.json_response(
                {
                    "error": {
                        "code": "unauthenticated",
                        "message": "role 'shop' does not accept this token",
                    }
                },
                status=401,
            )
        expires = datetime.now(UTC) + self.lifetime
        return web.json_response(
            {
                "token": f"kvt_{len(self.logins)}",
                "expires_at": expires.isoformat().replace("+00:00", "Z"),
            }
        )

    async def big(self, request: web.Request) -> web.Response:
        return web.Response(body=b"[" + b"1," * (1 << 20) + b"1]", content_type="application/json")


@pytest.fixture
async def agent() -> AsyncIterator[tuple[Agent, httpx.AsyncClient]]:
    state = Agent()
    app = web.Application()
    app.router.add_post("/api/v1/auth/jwt", state.login)
    app.router.add_get("/big", state.big)
    server = TestServer(app)
    await server.start_server()
    async with httpx.AsyncClient(base_url=str(server.make_url(""))) as client:
        yield state, client
    await server.close()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(SA_JWT + "\n")
    return path


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_login_sends_role_and_jwt_and_reuses_the_token(
    agent: tuple[Agent, httpx.AsyncClient], token_file: Path
) -> None:
    state, client = agent
    clock = Clock()
    login = JwtLogin(token_file, clock=clock)
    first = await login.token(client, "https://a", "shop")
    assert first == "kvt_1"
    assert state.logins == [{"role": "shop", "jwt": SA_JWT}]
    clock.now += timedelta(seconds=80)  # 40 s left of 120: still reused
    assert await login.token(client, "https://a", "shop") == "kvt_1"
    assert len(state.logins) == 1
    clock.now += timedelta(seconds=15)  # 25 s left: inside the 30 s margin, log in again
    assert await login.token(client, "https://a", "shop") == "kvt_2"
    login.forget("https://a", "shop")  # e.g. after a 401 on a read
    assert await login.token(client, "https://a", "shop") == "kvt_3"
    assert SA_JWT not in repr(login)


async def test_refused_login_is_unauthorized_with_the_agents_message(
    agent: tuple[Agent, httpx.AsyncClient], token_file: Path
) -> None:
    _, client = agent
    with pytest.raises(SyncError) as raised:
        await JwtLogin(token_file).token(client, "https://a", "other-role")
    assert raised.value.reason == "Unauthorized"
    assert "role 'other-role'" in raised.value.message
    assert "does not accept this token" in raised.value.message and "401" in raised.value.message
    assert SA_JWT not in raised.value.message


@pytest.mark.parametrize(
    "answer",
    [
        web.json_response({"token": "kvt_x"}),  # no expires_at
        web.json_response({"token": "", "expires_at": "2030-01-01T00:00:00Z"}),
        web.json_response({"token": "kvt_x", "expires_at": "tomorrow"}),
        web.Response(text="<html>proxy</html>", content_type="text/html"),
    ],
)
async def test_a_malformed_answer_is_a_clear_login_failure(
    agent: tuple[Agent, httpx.AsyncClient], token_file: Path, answer: web.Response
) -> None:
    state, client = agent
    state.answer = answer
    with pytest.raises(SyncError) as raised:
        await JwtLogin(token_file).token(client, "https://a", "shop")
    assert raised.value.reason == "LoginFailed"
    assert "no token or no readable expires_at" in raised.value.message


async def test_a_missing_service_account_token_says_where_it_looked(
    agent: tuple[Agent, httpx.AsyncClient], tmp_path: Path
) -> None:
    state, client = agent
    with pytest.raises(SyncError) as raised:
        await JwtLogin(tmp_path / "absent").token(client, "https://a", "shop")
    assert raised.value.reason == "LoginFailed"
    assert (
        str(tmp_path / "absent") in raised.value.message
        and "projected token" in raised.value.message
    )
    assert state.logins == []


async def test_answers_are_cut_at_one_mebibyte(agent: tuple[Agent, httpx.AsyncClient]) -> None:
    _, client = agent
    with pytest.raises(SyncError, match="over 1 MiB"):
        await request_json(client, "GET", "/big", "https://a")


async def test_an_unreachable_agent_is_agent_unreachable() -> None:
    async with httpx.AsyncClient(base_url="http://127.0.0.1:9") as client:
        with pytest.raises(SyncError) as raised:
            await request_json(client, "GET", "/api/v1/health", "https://vault.ns.svc:8443")
    assert raised.value.reason == "AgentUnreachable"
    assert "https://vault.ns.svc:8443" in raised.value.message
