"""Schemathesis over the control plane's OpenAPI document, against a real embedded process.

The control plane runs as a child process (``keyvault control-plane run`` through
:mod:`control_plane.cli`, embedded mode on SQLite); requests carry an owner's session token.
Checks: no 5xx, every status code and content type documented, every body valid against its
schema. Logout (it would end the fuzzing session) and the WebSocket stream are left out.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis.checks import CHECKS as CHECK_REGISTRY
from schemathesis.checks import load_all_checks
from schemathesis.core.parameters import ParameterLocation

from control_plane.openapi import openapi_document

if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "keyvault-hypothesis")

MAX_EXAMPLES = 25
load_all_checks()
CHECKS = CHECK_REGISTRY.get_all()  # every check schemathesis has
# What the document cannot state, by operation, and the checks that therefore cannot hold there.
# Each is a rule across fields or routes that JSON Schema has no words for; nothing else is left
# out. The policy body is being replaced by sealed intents (issue 14), so its rules are stated
# when that lands.
NOT_STATABLE = {
    "POST /api/v1/policies": ("positive_data_acceptance", "negative_data_rejection"),
    "PUT /api/v1/policies/{policy_id}": ("positive_data_acceptance", "negative_data_rejection"),
    # from <= to and at most 366 days apart (to defaults to today)
    "GET /api/v1/analytics/usage": ("positive_data_acceptance",),
    # GET /vaults/register is GET /vaults/{vault_id} with the id "register": Allow says so
    "POST /api/v1/vaults/register": ("allow_header_conformance",),
}
CLI = "from control_plane.cli import control_plane_group; control_plane_group()"
EMAIL, PASSWORD = "fuzz-owner@acme.test", "a long fuzzing password"

schema = schemathesis.openapi.from_dict(openapi_document())
fuzzed = schema.exclude(path="/api/v1/auth/logout").exclude(path="/api/v1/stream")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A control-plane process (embedded) for the whole module; yields its base URL."""
    folder = tmp_path_factory.mktemp("cp-fuzz")
    port = _free_port()
    env = {
        **os.environ,
        "KEYVAULT_CP_DATABASE_URL": f"sqlite+aiosqlite:///{folder / 'cp.db'}",
        "KEYVAULT_CP_CA_KEY_PASSPHRASE": "fuzz-ca-passphrase",
        "KEYVAULT_CP_ARGON2_TIME_COST": "1",
        "KEYVAULT_CP_ARGON2_MEMORY_KIB": "64",
        "KEYVAULT_CP_OWNER_PASSWORD": PASSWORD,
        "KEYVAULT_CP_LOGIN_MAX_FAILURES": "1000",
        "KEYVAULT_CP_PORT": str(port),
        "KEYVAULT_CP_GATEWAY_PORT": "0",
    }
    env.pop("KEYVAULT_CP_REDIS_URL", None)
    init = [sys.executable, "-c", CLI, "init", "--org", "Fuzz", "--email", EMAIL]
    subprocess.run(init, env=env, check=True, capture_output=True, timeout=60)
    log = open(folder / "cp.log", "wb")
    proc = subprocess.Popen([sys.executable, "-c", CLI, "run"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError((folder / "cp.log").read_text()[-2000:])
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


@pytest.fixture(scope="module")
def session(served: str) -> Iterator[requests.Session]:
    """A requests session carrying the owner's session token."""
    http = requests.Session()
    http.trust_env = False
    resp = http.post(f"{served}/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
    assert resp.status_code == 200, resp.text
    http.headers["Authorization"] = f"Bearer {resp.json()['token']}"
    try:
        yield http
    finally:
        http.close()


def test_served_document_is_the_fuzzed_one(served: str, session: requests.Session) -> None:
    resp = session.get(f"{served}/api/v1/openapi.json", timeout=10)
    assert resp.status_code == 200 and resp.json() == openapi_document()


@fuzzed.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms(case: schemathesis.Case, served: str, session: requests.Session) -> None:
    # the token travels in the case's own headers, so ignored_auth can take it away
    # (unless a negative case generated an Authorization header of its own on purpose)
    own = case.headers and any(k.lower() == "authorization" for k in case.headers)
    own = own or (case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER))
    auth = {} if own else {"Authorization": str(session.headers["Authorization"])}
    bare = requests.Session()
    bare.trust_env = False
    with bare:
        response = case.call(base_url=served, session=bare, timeout=30, headers=auth)
        skipped = NOT_STATABLE.get(case.operation.label, ())
        case.validate_response(
            response,
            checks=[c for c in CHECKS if c.__name__ not in skipped],
            headers=auth,
            transport_kwargs={"session": bare, "timeout": 30},
        )
