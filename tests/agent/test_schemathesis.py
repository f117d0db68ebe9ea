"""Schemathesis over the agent API's OpenAPI document, against a real agent process.

The agent runs as a child process with its default TLS set-up (TLS 1.3, client certificate
``optional``); every request goes over mutual TLS with the folder's client certificate and the
admin bearer token. Checks: no 5xx, every status code and content type documented, every
response body valid against its schema. Both positive and negative (schema-violating) cases
are generated, plus schemathesis's coverage examples (which max_examples does not bound). No 5xx
includes 503, documented as "store unavailable": the store is healthy throughout these tests.

``@schema.parametrize()`` needs the schema while pytest collects, before any agent runs, so the
schema is built from :func:`agent.api.openapi.openapi_document`; the first test proves the
running agent serves exactly that document at ``/api/v1/openapi.json``.

``POST /api/v1/sys/keys/rekey`` is left out of the fuzzing (see ``test_rekey_*`` below for why
and for what is checked instead). The fuzzing runs on the default SQLite store; a short list of
requests that only PostgreSQL refuses (NUL characters in text) runs against a PostgreSQL agent.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis.checks import CHECKS as CHECK_REGISTRY
from schemathesis.checks import load_all_checks
from schemathesis.core.parameters import ParameterLocation

from agent.api.openapi import openapi_document
from tests.conftest import (
    AgentProcess,
    fresh_pg_database,
    init_agent_dir,
    pg_sqlalchemy_url,
    start_agent,
)

# Hypothesis keeps its example database and caches outside the work tree.
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "keyvault-hypothesis")

# deeper, slower runs by hand: KEYVAULT_FUZZ_EXAMPLES=500 pytest tests/agent/test_schemathesis.py
MAX_EXAMPLES = int(os.environ.get("KEYVAULT_FUZZ_EXAMPLES", "40"))
REKEY = "/api/v1/sys/keys/rekey"
CHANGES = "/api/v1/changes"  # an endless stream: tested in tests/agent/test_change_stream.py

load_all_checks()
CHECKS = CHECK_REGISTRY.get_all()  # every check schemathesis has, positive and negative data
SEEDED_SECRETS = ("fuzz-alpha", "fuzz/beta", "fuzz/nested/gamma.v2")
SEEDED_DELETED = "fuzz/deleted"

# Objects that exist on the agent, so generated path parameters sometimes hit one.
EXISTING: dict[str, list[str]] = {"id": [], "token_id": [], "job_id": []}
DELETED: list[str] = []  # the soft-deleted seed, by name and id: what undelete/destroy take
# (operation, status) -> number of cases sent; printed at the end of the module (-s to see).
SENT: Counter[tuple[str, int]] = Counter()

schema = schemathesis.openapi.from_dict(openapi_document())
fuzzed = schema.exclude(path=[REKEY, CHANGES])


@schema.hook
def flatmap_path_parameters(
    context: schemathesis.HookContext, path_parameters: dict[str, Any]
) -> st.SearchStrategy[dict[str, Any]]:
    """Half the time, point a path parameter at an object that exists on the agent (never in a
    case whose path parameters were made invalid on purpose: the negative-data check must see
    the invalid value it generated)."""
    path = context.operation.path if context.operation else ""
    valid = all(isinstance(v, str) and 1 <= len(v) <= 200 for v in (path_parameters or {}).values())
    if not valid:
        return st.just(path_parameters)
    for name, known in EXISTING.items():
        if path.endswith(("/undelete", "/destroy")) and name == "id":
            known = DELETED + known
        if name in (path_parameters or {}) and known:
            swapped = st.sampled_from(known).map(lambda v, n=name: {**path_parameters, n: v})
            return st.one_of(st.just(path_parameters), swapped)
    return st.just(path_parameters)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """``agent_process`` for the whole module: starting an agent costs ~3 s, per operation
    that would be a minute. Default set-up: SQLite, TLS 1.3, client certificate optional."""
    folder = init_agent_dir(tmp_path_factory.mktemp("schemathesis") / "agent")
    running = start_agent(folder)
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            running.stop()
        summary = Counter[str]()
        for (label, _status), n in SENT.items():
            summary[label] += n
        for label, n in sorted(summary.items()):
            statuses = sorted((s, c) for (lab, s), c in SENT.items() if lab == label)
            print(f"schemathesis: {n:4d} cases  {label}  {statuses}")


def mtls_session(agent: AgentProcess) -> requests.Session:
    """A requests session speaking mutual TLS to the agent with the admin token."""
    tls = agent.dir.tls
    http = requests.Session()
    # REQUESTS_CA_BUNDLE and friends would otherwise replace our CA (requests' trust_env).
    http.trust_env = False
    http.verify = str(tls / "ca.crt")
    http.cert = (str(tls / "client.crt"), str(tls / "client.key"))
    http.headers["Authorization"] = f"Bearer {agent.dir.token}"
    return http


_BARE: dict[str, requests.Session] = {}


def bare_session(http: requests.Session) -> requests.Session:
    """The same TLS set-up without the token in the session: fuzzed cases carry it in their
    own headers, so the ignored_auth check can take it away."""
    key = repr(http.cert)
    if key not in _BARE:
        bare = requests.Session()
        bare.trust_env = False
        bare.verify, bare.cert = http.verify, http.cert
        _BARE[key] = bare
    return _BARE[key]


def send(case: schemathesis.Case, agent: AgentProcess, http: requests.Session) -> Any:
    """Send a case over the session (schemathesis passes verify=True itself unless told)."""
    return case.call(
        base_url=agent.url,
        session=bare_session(http),
        verify=http.verify,
        cert=http.cert,
        timeout=30,
        headers=_auth(case, agent),
    )


def _auth(case: schemathesis.Case, agent: AgentProcess) -> dict[str, str]:
    """The admin token, unless the case carries an Authorization header of its own or its headers
    were made invalid on purpose (a negative case may leave the token out)."""
    if case.headers and any(k.lower() == "authorization" for k in case.headers):
        return {}
    if case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER):
        return {}
    return {"Authorization": f"Bearer {agent.dir.token}"}


def validate(case: schemathesis.Case, response: Any, agent: AgentProcess, http: Any) -> None:
    """Every check, with what a probe (ignored_auth re-sends without the token) needs."""
    case.validate_response(
        response,
        checks=CHECKS,
        headers=_auth(case, agent),
        transport_kwargs={
            "session": bare_session(http),
            "verify": http.verify,
            "cert": http.cert,
            "timeout": 30,
        },
    )


@pytest.fixture(scope="module")
def session(served: AgentProcess) -> Iterator[requests.Session]:
    with mtls_session(served) as http:
        yield http


@pytest.fixture
def seeded(served: AgentProcess, session: requests.Session) -> None:
    """Before each operation's run: live secrets (one with older versions), one soft-deleted
    secret, a token and a job, so generated path parameters sometimes name a real object
    (the fuzzing of the previous operation may have deleted or destroyed them)."""
    api = f"{served.url}/api/v1"
    ids = EXISTING["id"]
    for name in (*SEEDED_SECRETS, SEEDED_DELETED):
        resp = session.post(f"{api}/secrets/{quote(name, safe='')}/undelete", timeout=10)
        if resp.status_code == 404:  # destroyed (or never made): make it again
            resp = session.post(f"{api}/secrets", json={"name": name, "value": "v1"}, timeout=10)
            assert resp.status_code == 201, resp.text
            resp = session.put(
                f"{api}/secrets/{resp.json()['id']}", json={"value": "v2"}, timeout=10
            )
        assert resp.status_code in (200, 409), resp.text
        known = DELETED if name == SEEDED_DELETED else ids
        known += [v for v in (name, resp.json().get("id")) if v and v not in known]
    resp = session.delete(f"{api}/secrets/{quote(SEEDED_DELETED, safe='')}", timeout=10)
    assert resp.status_code == 200, resp.text
    if not EXISTING["token_id"]:
        policy = [{"path": "fuzz/**", "capabilities": ["read"]}]
        resp = session.post(
            f"{api}/sys/tokens", json={"name": "fuzz", "policy": policy}, timeout=10
        )
        assert resp.status_code == 201, resp.text
        EXISTING["token_id"].append(resp.json()["info"]["id"])
    if not EXISTING["job_id"]:
        resp = session.post(f"{api}/sys/keys/rotate", timeout=10)
        assert resp.status_code == 202, resp.text
        EXISTING["job_id"].append(resp.json()["id"])


def test_served_document_is_the_fuzzed_one(served: AgentProcess, session: requests.Session) -> None:
    resp = session.get(f"{served.url}/api/v1/openapi.json", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.json() == openapi_document()


@fuzzed.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms(
    case: schemathesis.Case, served: AgentProcess, session: requests.Session, seeded: None
) -> None:
    response = send(case, served, session)
    SENT[(case.operation.label, response.status_code)] += 1
    validate(case, response, served, session)


# ------------------------------------------------------------------ rekey
#
# Not fuzzed: every body schemathesis can make valid replaces the running agent's master key
# with a generated passphrase at up to 10,000,000 PBKDF2 iterations (about two seconds each,
# computed on the event loop by agent/keys.py, so the whole agent stalls), and `new_key_file`
# names a file on the agent's host, so random strings would have the agent read arbitrary
# host paths. The checks below cover its contract instead.


def _rekey(served: AgentProcess, session: requests.Session, body: Any) -> requests.Response:
    return session.post(f"{served.url}{REKEY}", json=body, timeout=30)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"new_passphrase": "long enough passphrase", "new_key_file": "/x"},
        {"new_passphrase": "long enough passphrase", "iterations": 99_999},
        {"new_passphrase": "long enough passphrase", "iterations": 10_000_001},
        {"new_passphrase": 12345678901234},
        {"new_passphrase": "long enough passphrase", "extra": 1},
        [],
    ],
    ids=["empty", "both", "too-few-iterations", "too-many", "not-a-string", "unknown", "array"],
)
def test_rekey_rejects_malformed_bodies(
    served: AgentProcess, session: requests.Session, body: Any
) -> None:
    resp = _rekey(served, session, body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize(
    "body",
    [
        {"new_key_file": ""},
        {"new_key_file": "/nonexistent/keyvault-key"},
        {"new_key_file": "/etc/hostname"},
        {"new_passphrase": "short"},
    ],
    ids=["empty-path", "missing-file", "not-a-key", "short-passphrase"],
)
def test_rekey_refuses_bad_key_sources_with_400(
    served: AgentProcess, session: requests.Session, body: Any
) -> None:
    resp = _rekey(served, session, body)
    assert resp.status_code == 400, resp.text


def test_rekey_to_a_passphrase_conforms_and_the_agent_keeps_serving(
    served: AgentProcess, session: requests.Session, seeded: None
) -> None:
    case = schema[REKEY]["POST"].Case(
        body={"new_passphrase": "a brand new master passphrase", "iterations": 100_000}
    )
    response = send(case, served, session)
    validate(case, response, served, session)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    deadline = time.monotonic() + 30
    while True:
        job = session.get(f"{served.url}/api/v1/sys/jobs/{job_id}", timeout=10).json()
        if job["state"] != "running" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert job["state"] == "succeeded", job
    assert job["result"] == {"kdf": "pbkdf2-sha256", "config_updated": True}
    health = session.get(f"{served.url}/api/v1/health", timeout=10)
    assert health.status_code == 200
    keys = session.get(f"{served.url}/api/v1/sys/keys", timeout=10)
    assert keys.status_code == 200, keys.text


# ------------------------------------------------------------------ patterns the fuzzer cannot see
#
# The document's patterns end in "$", which in JSON Schema (ECMA-262) is the end of the text, and
# schemathesis generates accordingly: it never sends a trailing newline. The agent checks with
# Python's re.match, where "$" also matches before a final newline, so it accepts one.

TRAILING_NEWLINE = {
    "secret-name": ("/api/v1/secrets", {"name": "db/password\n", "value": "v"}),
    "label-key": ("/api/v1/secrets", {"name": "nl-label", "value": "v", "labels": {"env\n": "x"}}),
    "policy-glob": (
        "/api/v1/sys/tokens",
        {"name": "nl", "policy": [{"path": "**\n", "capabilities": ["read"]}]},
    ),
}


@pytest.mark.parametrize("path_body", TRAILING_NEWLINE.values(), ids=TRAILING_NEWLINE.keys())
def test_a_trailing_newline_is_refused(
    served: AgentProcess, session: requests.Session, path_body: tuple[str, dict[str, Any]]
) -> None:
    path, body = path_body
    case = schema[path]["POST"].Case(body=body)
    response = send(case, served, session)
    validate(case, response, served, session)
    assert response.status_code == 400, response.text


# ------------------------------------------------------------------ PostgreSQL
#
# PostgreSQL text refuses NUL characters; SQLite does not. A NUL that reaches a query fails in
# the store and comes back as 503 "store unavailable" instead of the caller's 4xx.


@pytest.fixture(scope="module")
def pg_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """A real agent process on a fresh PostgreSQL database (dropped afterwards)."""
    with fresh_pg_database() as name:
        folder = init_agent_dir(
            tmp_path_factory.mktemp("schemathesis-pg") / "agent",
            storage_url=pg_sqlalchemy_url(name),
        )
        running = start_agent(folder)
        try:
            yield running
        finally:
            if running.proc.poll() is None:
                running.stop()


NUL_CURSOR = "YQA"  # urlsafe base64 of b"a\x00", the shape of a cursor this agent issues
NUL_CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "read": ("/api/v1/secrets/{id}", "GET", {"path_parameters": {"id": "a\x00b"}}),
    "versions": ("/api/v1/secrets/{id}/versions", "GET", {"path_parameters": {"id": "\x00"}}),
    "delete": ("/api/v1/secrets/{id}", "DELETE", {"path_parameters": {"id": "a\x00"}}),
    "rotate": (
        "/api/v1/secrets/{id}/rotate",
        "POST",
        {"path_parameters": {"id": "a\x00"}, "body": {}},
    ),
    "update": (
        "/api/v1/secrets/{id}",
        "PUT",
        {"path_parameters": {"id": "a\x00"}, "body": {"value": "x"}},
    ),
    "list-prefix": ("/api/v1/secrets", "GET", {"query": {"prefix": "a\x00"}}),
    "list-after": ("/api/v1/secrets", "GET", {"query": {"after": NUL_CURSOR}}),
    "create-description": (
        "/api/v1/secrets",
        "POST",
        {"body": {"name": "nul-description", "value": "v", "description": "a\x00b"}},
    ),
    "create-value": (
        "/api/v1/secrets",
        "POST",
        {"body": {"name": "nul-value", "value": "binary\x00value"}},
    ),
    "job": ("/api/v1/sys/jobs/{job_id}", "GET", {"path_parameters": {"job_id": "\x00"}}),
}
NUL_BUGS = {
    "revoke-token": pytest.param(
        ("/api/v1/sys/tokens/{token_id}", "DELETE", {"path_parameters": {"token_id": "t\x00"}}),
        id="revoke-token",
    )
}


@pytest.mark.postgres
@pytest.mark.parametrize(
    "request_",
    [*(pytest.param(c, id=k) for k, c in NUL_CASES.items()), *NUL_BUGS.values()],
)
def test_nul_characters_are_the_callers_mistake_on_postgresql(
    pg_served: AgentProcess, request_: tuple[str, str, dict[str, Any]]
) -> None:
    path, method, parts = request_
    case = schema[path][method].Case(**parts)
    with mtls_session(pg_served) as http:
        response = send(case, pg_served, http)
        validate(case, response, pg_served, http)
    assert response.status_code < 500, response.text
