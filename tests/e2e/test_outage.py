"""Outage: the control plane is killed (SIGKILL) and restarted ten times while two agents write.

Afterwards every event has arrived exactly once: for each vault, the control plane's usage counts
per operation equal the operations in the agent's own audit log, and its inventory has every
secret at the agent's version.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from typing import Any

from agent.audit import iter_entries
from common.errors import KeyVaultError
from tests.e2e.conftest import ControlPlane, FleetAgent, wait_for

CYCLES = 10


def _writer(agent: FleetAgent, stop: threading.Event, errors: list[str]) -> None:
    assert agent.proc is not None
    rng = random.Random()
    with agent.proc.client() as c:
        while not stop.is_set():
            name = f"load/s{rng.randrange(25)}"
            try:
                try:
                    c.update(name, value=f"v{rng.random()}")
                except KeyVaultError as exc:
                    if exc.code != "not_found":
                        raise
                    c.create(name, value="first")
                if rng.random() < 0.3:
                    c.get(name)
            except KeyVaultError as exc:  # the agent must keep serving through the outage
                errors.append(f"{name}: {exc.code}")
            time.sleep(0.01)


def _agent_counts(agent: FleetAgent) -> Counter[str]:
    return Counter(e["op"] for e in iter_entries(agent.dir.path))


def _cp_counts(cp: ControlPlane, vault_id: str) -> Counter[str]:
    with cp.api() as c:
        r = c.get("/analytics/usage", params={"vault_id": vault_id})
        r.raise_for_status()
        counts: Counter[str] = Counter()
        for row in r.json()["rows"]:
            counts[row["operation"]] += row["count"]
        return counts


def test_ten_outages_lose_nothing_and_count_nothing_twice(
    control_plane: ControlPlane, make_agent: Any
) -> None:
    cp = control_plane
    agents: list[FleetAgent] = [make_agent(cp, "one"), make_agent(cp, "two")]
    for agent in agents:
        agent.start()
    stop, errors = threading.Event(), list[str]()
    threads = [threading.Thread(target=_writer, args=(a, stop, errors)) for a in agents]
    for t in threads:
        t.start()
    replica = cp.replicas[0]
    rng = random.Random()
    try:
        for _ in range(CYCLES):
            time.sleep(rng.uniform(0.5, 2.0))  # up: agents connect and deliver
            port = int(replica.gateway_url.rsplit(":", 1)[1])
            replica.stop(signal.SIGKILL)
            cp.replicas.remove(replica)
            time.sleep(rng.uniform(0.2, 2.0))  # down: agents keep serving and queueing
            replica = cp.start_replica(gateway_port=port)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors[:5]

    for agent in agents:
        vault_id = agent.vault_id
        expected = _agent_counts(agent)
        assert sum(expected.values()) > 100  # the load really ran

        def converged(v: str = vault_id, e: Counter[str] = expected) -> bool:
            return _cp_counts(cp, v) == e

        wait_for(
            converged,
            90,
            f"usage of {vault_id} to equal the agent's audit log {dict(expected)}",
        )
        assert agent.proc is not None
        with agent.proc.client() as local:
            listed = local.list(prefix="load/", limit=100)["secrets"]
        versions = {s["id"]: s["version"] for s in listed}

        def inventory(v: str = vault_id) -> dict[str, int]:
            with cp.api() as c:
                r = c.get(f"/vaults/{v}/inventory", params={"limit": 500})
                return {i["secret_id"]: i["version"] for i in r.json()["items"]}

        # the inventory travels in the outbox, apart from the audit log's usage counts: the
        # usage having converged says nothing of it, so it gets its own deadline
        def caught_up(v: str = vault_id, want: dict[str, int] = versions) -> bool:
            return inventory(v) == want

        wait_for(caught_up, 90, f"the inventory of {vault_id} at the agent's versions {versions}")
