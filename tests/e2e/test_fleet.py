"""End to end: two agents and two control-plane replicas as processes, PostgreSQL and Redis.

Secrets written on the agents show up, sealed, in the control plane's inventory; an operator's
rotate command given to the *second* replica reaches the agent whose socket the *first* holds
(Redis pub/sub), runs there only, and its result comes back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from apps.core.intents import IntentMaker
from common.metadata_key import MetadataKey
from tests.e2e.conftest import ControlPlane, FleetAgent, wait_for


def _inventory(cp: ControlPlane, vault_id: str, replica: int = 0) -> dict[str, dict[str, Any]]:
    with cp.api(cp.replicas[replica]) as c:
        r = c.get(f"/vaults/{vault_id}/inventory", params={"limit": 500})
        r.raise_for_status()
        return {item["secret_id"]: item for item in r.json()["items"]}


def _online(cp: ControlPlane, vault_id: str) -> bool:
    with cp.api() as c:
        return bool(c.get(f"/vaults/{vault_id}").json()["status"] == "online")


def test_inventory_is_sealed_and_commands_route_through_another_replica(
    control_plane: ControlPlane, make_agent: Any, tmp_path: Path
) -> None:
    cp = control_plane
    key = MetadataKey.generate()
    key_file = key.save(tmp_path / "metadata.key")
    with cp.api() as c:
        c.put("/org/metadata-key", json={"fingerprint": key.fingerprint}).raise_for_status()
    alpha: FleetAgent = make_agent(cp, "alpha", key_file)
    beta: FleetAgent = make_agent(cp, "beta", key_file)
    alpha.start()
    beta.start()
    second = cp.start_replica()

    written: dict[str, dict[str, str]] = {}  # vault id -> name -> secret id
    for agent, names in ((alpha, ["db/password", "api/key"]), (beta, ["db/password", "smtp/pass"])):
        assert agent.proc is not None
        with agent.proc.client() as local:
            written[agent.vault_id] = {
                name: local.create(name, value=f"value of {name}", description=f"about {name}")[
                    "id"
                ]
                for name in names
            }
    for vault_id in written:
        wait_for(lambda: _online(cp, vault_id), 30, f"{vault_id} online")  # noqa: B023

    for vault_id, ids in written.items():

        def reported(v: str = vault_id, i: dict[str, str] = ids) -> dict[str, Any] | None:
            inv = _inventory(cp, v, 1)
            return inv if inv.keys() >= set(i.values()) else None

        inventory = wait_for(reported, 30, f"inventory of {vault_id} on the second replica")
        for name, secret_id in ids.items():
            item = inventory[secret_id]
            assert item["version"] == 1
            assert name not in str(item)  # only the sealed label carries it
            assert key.open(vault_id, secret_id, item["label"])["name"] == name

    # rotate beta's db/password through the second replica; the first holds beta's socket
    target = written[beta.vault_id]["db/password"]
    with cp.api(second) as c:
        sealed = IntentMaker(lambda: key).command(beta.vault_id, "rotate", {"secret_id": target})
        r = c.post(f"/vaults/{beta.vault_id}/commands", json=sealed)  # an operator's intent
        assert r.status_code == 202, r.text
        command_id = r.json()["id"]
        done = wait_for(
            lambda: (
                (doc := c.get(f"/commands/{command_id}").json())["state"] in ("succeeded", "failed")
                and doc
            ),
            30,
            "the rotate command's result",
        )
    assert done["state"] == "succeeded", done

    assert beta.proc is not None and alpha.proc is not None
    with beta.proc.client() as local:
        assert local.get(target)["version"] == 2
        assert local.get("smtp/pass")["version"] == 1
    with alpha.proc.client() as local:
        assert local.get("db/password")["version"] == 1  # same name, other vault: untouched
    wait_for(
        lambda: _inventory(cp, beta.vault_id)[target]["version"] == 2,
        30,
        "the new version in the inventory",
    )
