"""A copied agent certificate dies with the next renewal, and a revoke cuts every certificate of
the vault: a real control-plane process (PostgreSQL + Redis), a real agent process enrolled
with the CLI, and a test-side uplink playing the holder of a copy of the agent's key.

The overlap after a renewal and the renewal interval are configured short, so the test is quick.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from common import uplink
from tests.control_plane.mock_agent import Enrolled
from tests.e2e.conftest import ControlPlane, FleetAgent, wait_for

OVERLAP, INTERVAL = 2.0, 1.0


def _identity(agent: FleetAgent, folder: Path) -> Enrolled:
    """A copy of the agent's uplink identity (key + chain), as someone who copied it holds it."""
    src = agent.dir.path / "uplink"
    folder.mkdir(parents=True)
    for name in ("client.key", "client.crt"):
        shutil.copy2(src / name, folder / name)
    state = json.loads((src / "state.json").read_text())
    service_ca = (src / "service-ca.pem").read_text()
    return Enrolled(state["vault_id"], state["control_plane_url"], folder, service_ca)


async def _upgrade_status(who: Enrolled) -> tuple[int, str]:
    """(HTTP status, error code) of an uplink request with ``who``'s certificate."""
    async with aiohttp.ClientSession() as session:
        resp = await session.get(who.gateway_url + uplink.UPLINK_PATH, ssl=who.ssl())
        body = await resp.json()
    return resp.status, str(body.get("error", {}).get("code"))


async def _renew(who: Enrolled, folder: Path) -> Enrolled:
    """Connect as ``who``, renew, and return the renewed identity (written to ``folder``)."""
    from tests.control_plane.test_revocation import _renew as renew

    link = await who.online()
    try:
        return await renew(link, folder)
    finally:
        await link.close()


def test_a_copied_certificate_dies_with_renewal_and_revoke_cuts_every_certificate(
    control_plane: ControlPlane, make_agent: Callable[..., FleetAgent], tmp_path: Path
) -> None:
    cp = control_plane
    cp.stop()
    cp.replicas.clear()
    cp.env["KEYVAULT_CP_CERT_OVERLAP_SECONDS"] = str(OVERLAP)
    cp.env["KEYVAULT_CP_CERT_RENEWAL_INTERVAL_SECONDS"] = str(INTERVAL)
    cp.start_replica()
    agent = make_agent(cp, "renewing")
    copied = _identity(agent, tmp_path / "copied")
    mine = _identity(agent, tmp_path / "mine")

    # the owner's agent renews (here on its behalf, with its own key pair and files)
    renewed = asyncio.run(_renew(mine, tmp_path / "renewed"))
    for name in ("client.key", "client.crt"):
        shutil.copy2(renewed.folder / name, agent.dir.path / "uplink" / name)
    assert asyncio.run(_upgrade_status(copied))[0] == 400  # inside the overlap: still accepted
    time.sleep(OVERLAP + 0.5)
    assert asyncio.run(_upgrade_status(copied)) == (403, uplink.ERR_SUPERSEDED)
    with cp.api() as c:
        alerts = c.get("/alerts", params={"state": "open"}).json()["items"]
    assert any(
        a["kind"] == "integrity_failure" and a["vault_id"] == agent.vault_id for a in alerts
    ), alerts

    # the real agent connects with the renewed certificate; a revoke closes its live socket
    agent.start()
    wait_for(lambda: agent.health()["uplink"]["state"] == "connected", 30, "the uplink")
    with cp.api() as c:
        c.post(f"/vaults/{agent.vault_id}/revoke").raise_for_status()
    wait_for(lambda: agent.health()["uplink"]["state"] == "revoked", 30, "the agent to see it")
    for who in (renewed, copied):
        assert asyncio.run(_upgrade_status(who)) == (403, uplink.ERR_REVOKED)
    # and a revoked vault cannot renew its way back: it never gets a socket to ask on
    try:
        asyncio.run(_renew(renewed, tmp_path / "again"))
    except aiohttp.WSServerHandshakeError as exc:
        assert exc.status == 403
    else:
        raise AssertionError("a revoked vault renewed its certificate")
