"""Zero knowledge: 200 canary secrets never reach the control plane in any form.

An agent with the organisation's metadata key holds 200 secrets whose names, descriptions and
values are canaries; an operator rotates one and resyncs the vault. Then everything the control
plane holds or saw is searched for every canary (and for the agent's token and master key) as
plain text, hex, base64 (any alignment, standard and URL-safe), URL encoding and first 16 bytes:
its PostgreSQL database (``pg_dump``), every command Redis received while the test ran
(``MONITOR``) and every key and value left under its prefix, every replica's log (DEBUG), and
every uplink frame in both directions (the agent's uplink trace). The search must find nothing;
a positive control proves it would have.
"""

from __future__ import annotations

import base64
import secrets
import subprocess
import threading
from pathlib import Path
from typing import Any

import redis

from apps.core.intents import IntentMaker
from common.metadata_key import MetadataKey
from tests.e2e.conftest import REDIS_URL, ControlPlane, FleetAgent, wait_for
from tests.e2e.leaks import search

CANARIES = 200


class RedisMonitor:
    """Records every command any client sends to Redis (``MONITOR``) in a background thread."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self._client = redis.Redis.from_url(REDIS_URL)
        self._monitor = self._client.monitor()
        self._monitor.__enter__()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                event = self._monitor.next_command()
            except (redis.RedisError, OSError, ValueError):
                return
            self.lines.append(str(event.get("command", "")).encode("utf-8", "replace"))

    def stop(self) -> bytes:
        """Stop recording; everything seen, one command per line."""
        self._stop.set()
        self._client.close()
        try:
            self._monitor.__exit__(None, None, None)
        except (redis.RedisError, OSError):
            pass
        self._thread.join(5)
        return b"\n".join(self.lines)


def _b(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")


def _redis_keys(prefix: str) -> bytes:
    client: Any = redis.Redis.from_url(REDIS_URL)
    out: list[bytes] = []
    for key in client.scan_iter(f"{prefix}:*"):
        out += [_b(key), _b(client.dump(key) or b"")]
        kind = client.type(key)
        if kind == b"string":
            out.append(_b(client.get(key) or b""))
        elif kind == b"hash":
            out += [_b(k) + b"=" + _b(v) for k, v in client.hgetall(key).items()]
        elif kind == b"list":
            out += [_b(v) for v in client.lrange(key, 0, -1)]
        elif kind == b"set":
            out += [_b(v) for v in client.smembers(key)]
        elif kind == b"zset":
            out += [_b(m) for m in client.zrange(key, 0, -1)]
    client.close()
    return b"\n".join(out)


def _pg_dump(database: str) -> bytes:
    return subprocess.run(
        ["pg_dump", "-h", "127.0.0.1", "-U", "postgres", "--data-only", "--inserts", database],
        check=True,
        capture_output=True,
        timeout=120,
    ).stdout


def test_no_canary_reaches_the_control_plane(
    control_plane: ControlPlane, make_agent: Any, tmp_path: Path
) -> None:
    cp = control_plane
    monitor = RedisMonitor()
    key = MetadataKey.generate()
    key_file = key.save(tmp_path / "metadata.key")
    with cp.api() as c:
        c.put("/org/metadata-key", json={"fingerprint": key.fingerprint}).raise_for_status()
    agent: FleetAgent = make_agent(cp, "canary", key_file)
    trace = tmp_path / "uplink-trace.jsonl"
    proc = agent.start(env={"KEYVAULT_UPLINK__TRACE_FILE": str(trace)})
    second = cp.start_replica()

    canaries: list[str] = []
    ids: list[str] = []
    with proc.client() as c:
        for _ in range(CANARIES):
            name = f"canary/{secrets.token_hex(12)}"
            value = f"kvcanary-{secrets.token_hex(16)}/+ =&{secrets.token_hex(4)}"
            description = f"canary description {secrets.token_hex(10)}"
            ids.append(c.create(name, value=value, description=description)["id"])
            canaries += [name, value, description]
        c.rotate(ids[0])  # a new value generated on the agent
        canaries.append(c.get(ids[0])["value"])
    vault_id = agent.vault_id
    with cp.api(second) as c:
        seal = IntentMaker(lambda: key)  # commands are an operator's sealed intents
        for body in (seal.command(vault_id, "rotate", {"secret_id": ids[1]}),
                     seal.command(vault_id, "resync", {})):  # fmt: skip
            r = c.post(f"/vaults/{vault_id}/commands", json=body)
            assert r.status_code == 202, r.text
        wait_for(
            lambda: all(
                cmd["state"] == "succeeded"
                for cmd in c.get(f"/vaults/{vault_id}/commands").json()["items"]
            ),
            30,
            "both commands to succeed",
        )
        wait_for(
            lambda: (
                len(c.get(f"/vaults/{vault_id}/inventory", params={"limit": 500}).json()["items"])
                == CANARIES
            ),
            30,
            "the whole inventory",
        )
    with proc.client() as c:
        canaries.append(c.get(ids[1])["value"])  # the value the operator's command made
    wait_for(lambda: agent.health()["uplink"]["outbox_depth"] == 0, 30, "an empty outbox")
    agent.stop()
    cp.stop()

    master_key = (agent.dir.path / "master.key").read_bytes().strip()
    secrets_of_agent = [agent.dir.token, master_key.decode("ascii", "replace")]
    blobs = {
        "postgres dump": _pg_dump(cp.database),
        "redis commands (MONITOR)": monitor.stop(),
        "redis keys and values": _redis_keys(cp.env["KEYVAULT_CP_REDIS_PREFIX"]),
        "control-plane logs": cp.logs(),
        "uplink frames": trace.read_bytes(),
    }
    # the captures are real: the frames and the database hold the sealed inventory
    assert blobs["uplink frames"].count(b'"type":"events"') > 0
    assert ids[5].encode() in blobs["uplink frames"] and ids[5].encode() in blobs["postgres dump"]
    assert b"kvl1." in blobs["postgres dump"]
    assert vault_id.encode() in blobs["redis commands (MONITOR)"]
    # positive control: the search finds a canary hidden as URL-safe base64 at an odd offset
    planted = {"control": b"xx" + base64.urlsafe_b64encode(b"ab" + canaries[1].encode())}
    assert search([canaries[1]], planted)

    hits = search(canaries + secrets_of_agent, blobs)
    assert not hits, [(h.where, h.form[:40]) for h in hits[:10]]
