"""A flood of bogus invitation accepts and logins against a real replica process: a real
operator's login stays under a second (embedded, and production on PostgreSQL + Redis).

The replica runs with OWASP's minimum argon2id (19 MiB, 2 passes), the default hashing pool
and limits, behind a declared TLS proxy so each request's source is the X-Forwarded-For the
test sets; the attacker's 200 requests are all in flight at once on their own connections.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from control_plane.settings import ControlPlaneSettings
from tests.control_plane.conftest import PASSWORD

CLI = [sys.executable, "-m", "apps.cli.main"]
VICTIM = "victim@acme.test"


def settings_env(settings: ControlPlaneSettings) -> dict[str, str]:
    """``KEYVAULT_CP_…`` variables that rebuild ``settings`` in a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYVAULT_")}
    for name, value in settings.model_dump(mode="json", exclude_defaults=True).items():
        if name == "ca_key_passphrase":
            continue
        text = json.dumps(value) if isinstance(value, list | dict) else str(value)
        env[f"KEYVAULT_CP_{name.upper()}"] = text.lower() if isinstance(value, bool) else text
    if settings.ca_key_passphrase is not None:
        env["KEYVAULT_CP_CA_KEY_PASSPHRASE"] = settings.ca_key_passphrase.get_secret_value()
    return env


@pytest.fixture
def replica(settings_factory: Callable[..., ControlPlaneSettings], tmp_path: Path) -> Iterator[str]:
    """A real control-plane process; yields its API URL (the victim's account exists)."""
    settings = settings_factory(
        tls_proxy=True,
        argon2_time_cost=2,
        argon2_memory_kib=19456,
        login_max_failures=5,
        login_source_max_failures=30,
    )
    env = settings_env(settings)
    made = subprocess.run(
        [*CLI, "control-plane", "init", "--org", "Acme", "--email", VICTIM],
        env={**env, "KEYVAULT_CP_OWNER_PASSWORD": PASSWORD},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    ready, log = tmp_path / "ready.json", tmp_path / "cp.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*CLI, "control-plane", "run", "--ready-file", str(ready)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while not (ready.exists() and ready.stat().st_size):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield str(json.loads(ready.read_text())["api_url"])
    finally:
        proc.terminate()
        proc.wait(20)


def src(address: str) -> dict[str, str]:
    """Requests from ``address`` through the trusted proxy."""
    return {"X-Forwarded-For": address}


async def flood(url: str) -> tuple[float, Counter[int]]:
    """200 bogus requests in flight from 5 addresses, and the victim's login among them."""
    async with aiohttp.ClientSession() as own:
        doc = {"email": VICTIM, "password": PASSWORD}
        async with own.post(f"{url}/api/v1/auth/login", json=doc, headers=src("192.0.2.50")) as r:
            assert r.status == 200  # the victim's usual address: a trusted pair from now on
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as attacker:

        async def bogus(i: int) -> int:
            if i % 2:
                path, body = "invitations/accept", {"token": f"kvi_x{i}", "password": "p" * 16}
            else:
                path, body = "auth/login", {"email": f"spray{i}@acme.test", "password": "g" * 12}
            headers = src(f"198.51.100.{60 + i % 5}")
            async with attacker.post(f"{url}/api/v1/{path}", json=body, headers=headers) as r:
                return r.status

        async def real_login() -> float:
            await asyncio.sleep(0.05)  # once the flood is in flight
            started = time.perf_counter()
            async with aiohttp.ClientSession() as own:
                doc = {"email": VICTIM, "password": PASSWORD}
                login = f"{url}/api/v1/auth/login"
                async with own.post(login, json=doc, headers=src("192.0.2.50")) as r:
                    assert r.status == 200, await r.text()
            return time.perf_counter() - started

        *statuses, took = await asyncio.gather(*(bogus(i) for i in range(200)), real_login())
    return took, Counter(int(s) for s in statuses)


def test_a_flood_of_bogus_accepts_and_logins_leaves_a_real_login_fast(replica: str) -> None:
    took, counts = asyncio.run(flood(replica))
    assert took < 1.0, (took, counts)
    assert set(counts) <= {401, 404, 429, 503}, counts
    assert counts[429] + counts[503] >= 100, counts  # slowed, not served
