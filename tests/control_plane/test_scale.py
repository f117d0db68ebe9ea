"""``GET /api/v1/vaults`` for an organisation with 10,000 vaults stays fast page after page."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from control_plane import schema as t
from control_plane.db import new_id
from tests.control_plane.conftest import Api

N_VAULTS = 10_000
PAGE = 100


@pytest.mark.parametrize("mode", ["production"], indirect=True)
async def test_ten_thousand_vaults_paginate_quickly(api: Api) -> None:
    owner = await api.org("Big", "owner@big.test")
    org_id = (await api.call("GET", "/me", owner))[1]["org"]["id"]
    now = datetime.now(UTC)
    rows = [
        {
            "id": new_id("vlt"),
            "org_id": org_id,
            "name": f"v{i}",
            "agent_version": "0.1.0",
            "csr_sha256": "0" * 64,
            "cert_pem": "-",
            "cert_serial": format(i + 1, "x"),
            "cert_not_after": now,
            "enrollment_token_id": new_id("enr"),
            "created_at": now,
            "last_heartbeat_at": now if i % 3 else None,
        }
        for i in range(N_VAULTS)
    ]
    async with api.cp.engine.begin() as conn:
        await conn.execute(t.vaults.insert(), rows)
    timings: list[float] = []
    seen, cursor = 0, None
    while True:
        path = f"/vaults?limit={PAGE}" + (f"&cursor={cursor}" if cursor else "")
        started = time.perf_counter()
        status, page = await api.call("GET", path, owner)
        timings.append(time.perf_counter() - started)
        assert status == 200
        seen += len(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == N_VAULTS
    timings.sort()
    p50, p99 = timings[len(timings) // 2], timings[int(len(timings) * 0.99) - 1]
    print(
        f"GET /vaults ({N_VAULTS} vaults, {PAGE}/page), client-observed in-process: "
        f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
    )
    # The server's own latency histogram. The target is p99 <= 50 ms (issue 3), measured with
    # a dedicated benchmark on an idle machine; on a shared CI box only a gross regression
    # (a full scan, an N+1 query) may fail the suite: >= 99% within 250 ms.
    text = api.cp.metrics.render({})
    buckets = {
        line.split('le="')[1].split('"')[0]: int(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('keyvault_cp_request_seconds_bucket{route="vaults.list"')
    }
    assert buckets["+Inf"] == len(timings)
    assert buckets["0.25"] >= 0.99 * len(timings), buckets
