"""Inventory and commands through the CLI and client against the real control plane.

The agent's side is played by handing ``events`` frames to the control plane's own parser and
ingest (what its gateway does with an uplink frame), so everything from there to the CLI's
output is the real code.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from apps.core.keyring_store import CredentialStore
from common import errors as e
from common.cpclient import ControlPlaneClient
from common.metadata_key import MetadataKey
from tests.apps.conftest import OWNER, LiveControlPlane
from tests.apps.test_cli_operator import login, one_error_line, run

_seq = itertools.count(1)


def agent_sends(live: LiveControlPlane, vault_id: str, *events: tuple[str, dict[str, Any]]) -> None:
    """Deliver one ``events`` frame from a vault, as the gateway would after reading it."""
    from control_plane.gateway.frames import parse_events
    from control_plane.services.presence import VaultRef

    now = datetime.now(UTC).isoformat()
    batch = []
    for kind, data in events:
        seq = next(_seq)
        batch.append({"id": f"o{seq}", "seq": seq, "kind": kind, "at": now, "data": data})
    _, parsed = parse_events({"type": "events", "stream": "outbox", "batch": batch})
    vault = VaultRef(vault_id, live.org_id, "web-1")
    live.server.run(live.cp.ingest.batch(vault, parsed))


def inventory_item(
    key: MetadataKey | None, vault_id: str, secret_id: str, name: str
) -> dict[str, Any]:
    """An agent's inventory event data for one secret."""
    return {
        "secret_id": secret_id,
        "version": 3,
        "created_at": "2025-01-01T00:00:00+00:00",
        "updated_at": "2025-01-02T00:00:00+00:00",
        "deleted_at": None,
        "destroyed": False,
        "policy_id": None,
        "rotation": {"state": "ok", "last_rotated_at": None, "next_due_at": None},
        "label": key.seal(vault_id, secret_id, {"name": name}) if key else None,
    }


@pytest.fixture
def fleet(
    keyring_env: dict[str, str], live_cp: LiveControlPlane, tmp_path: Any
) -> tuple[LiveControlPlane, str, MetadataKey]:
    """Logged in as the owner, a metadata key made by the CLI, one enrolled vault."""
    login(live_cp)
    made = run("org", "metadata-key", "create", "--out", str(tmp_path / "mk.key"))
    assert made.exit_code == 0, made.output
    key = MetadataKey.load(tmp_path / "mk.key")
    return live_cp, live_cp.enroll_vault("web-1"), key


def test_inventory_shows_names_opened_locally(
    fleet: tuple[LiveControlPlane, str, MetadataKey],
) -> None:
    live, vault_id, key = fleet
    names = {f"sec_{i:02d}": f"app/secret-{i}" for i in range(5)}
    agent_sends(
        live,
        vault_id,
        *[("inventory", inventory_item(key, vault_id, sid, n)) for sid, n in names.items()],
        ("inventory", inventory_item(None, vault_id, "sec_99", "unlabelled")),
    )
    result = run("vaults", "inventory", vault_id)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:]] == [*names.values(), "sec_99"]
    assert "agent sends no label" in result.stderr
    for label_text in names.values():  # the control plane holds no name in any form
        assert label_text not in json.dumps(live.server.run(_inventory_rows(live, vault_id)))

    with ControlPlaneClient(live.url, live.token()) as cp:
        page = cp.inventory(vault_id, limit=2)
        assert len(page["items"]) == 2 and page["next_cursor"] == "sec_01"
        assert len(list(cp.iter_inventory(vault_id, page_size=2))) == 6

    CredentialStore().delete_metadata_key(live.org_id)
    blind = run("vaults", "inventory", vault_id)
    assert "app/secret-0" not in blind.stdout and "sec_00 *" in blind.stdout
    assert "no metadata key in this keyring" in blind.stderr


async def _inventory_rows(live: LiveControlPlane, vault_id: str) -> list[dict[str, Any]]:
    from control_plane.services.principal import Principal

    who = Principal("usr_x", live.org_id, OWNER, "owner", "ses_x")
    page = await live.cp.inventory.list(who, vault_id, after=None, limit=500)
    return list(page["items"])


class AgentPlayer(threading.Thread):
    """Plays the agent: waits for the vault's next new command, marks it sent, then reports
    its result (commands unfinished before it started are left alone)."""

    def __init__(self, live: LiveControlPlane, vault_id: str, outcome: str, message: str) -> None:
        super().__init__(daemon=True)
        self.live, self.vault_id, self.outcome, self.message = live, vault_id, outcome, message
        self.error: BaseException | None = None
        self.old = {f["id"] for f in self._unfinished()}

    def _unfinished(self) -> list[dict[str, Any]]:
        frames = self.live.server.run(self.live.cp.commands.unfinished_frames(self.vault_id))
        return list(frames)

    def run(self) -> None:
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                frames = [f for f in self._unfinished() if f["id"] not in self.old]
                if frames:
                    command_id = frames[-1]["id"]
                    self.live.server.run(self.live.cp.commands.mark_sent([command_id]))
                    time.sleep(0.6)  # the CLI sees it "sent" at least once
                    result = {"command_id": command_id, "outcome": self.outcome}
                    result["message"] = self.message
                    agent_sends(self.live, self.vault_id, ("command_result", result))
                    return
                time.sleep(0.05)
            raise TimeoutError("no command arrived")
        except BaseException as exc:
            self.error = exc


def test_rotate_and_resync_with_wait(fleet: tuple[LiveControlPlane, str, MetadataKey]) -> None:
    live, vault_id, _ = fleet
    sent = run("vaults", "rotate", vault_id, "sec_01")
    assert sent.exit_code == 0, sent.output
    assert sent.stdout.startswith("command cmd_") and "(rotate sec_01) is pending" in sent.stdout
    first_id = sent.stdout.split()[1]

    player = AgentPlayer(live, vault_id, "ok", "rotated to version 4")
    player.start()
    waited = run("vaults", "rotate", vault_id, "sec_02", "--wait", "--timeout", "20")
    player.join(25)
    assert player.error is None
    assert waited.exit_code == 0, waited.output
    assert "succeeded: rotated to version 4" in waited.stdout

    player = AgentPlayer(live, vault_id, "failed", "the rotator refused")
    player.start()
    failed = run("vaults", "resync", vault_id, "--wait", "--timeout", "20")
    player.join(25)
    assert player.error is None
    one_error_line(failed, 1, "(resync) failed: the rotator refused")

    slow = run("vaults", "resync", vault_id, "--wait", "--timeout", "1")
    one_error_line(slow, 75, "still pending after 1 s", "keyvault vaults command cmd_")

    listed = run("vaults", "commands", vault_id)
    assert listed.stdout.splitlines()[0].split() == ["ID", "COMMAND", "STATE", "CREATED", "RESULT"]
    assert listed.stdout.splitlines()[1].split()[:4] == [first_id, "rotate", "sec_01", "pending"]
    docs = json.loads(run("vaults", "commands", vault_id, "--json").stdout)
    assert [d["state"] for d in docs] == ["pending", "succeeded", "failed", "pending"]
    assert docs[1]["result"] == "rotated to version 4"
    shown = run("vaults", "command", first_id, "--json")
    assert json.loads(shown.stdout)["args"] == {"secret_id": "sec_01"}

    # a name that is no secret of the vault: not found, with how to list them
    one_error_line(
        run("vaults", "rotate", vault_id, "bad id!"), 66, "no secret 'bad id!'", "inventory"
    )
    one_error_line(run("vaults", "resync", "vlt_nope"), 66)
    assert run("vaults", "revoke", vault_id, "--yes").exit_code == 0
    one_error_line(run("vaults", "resync", vault_id), 65, "revoked")


def test_a_viewer_cannot_send_commands(
    fleet: tuple[LiveControlPlane, str, MetadataKey],
) -> None:
    live, vault_id, _ = fleet
    viewer = live.member("viewer@example.com", "viewer")
    assert run("logout").exit_code == 0
    login(live, viewer)
    one_error_line(run("vaults", "resync", vault_id), 77, "operator")
    assert run("vaults", "inventory", vault_id).exit_code == 0
    with (
        ControlPlaneClient(live.url, live.token(viewer)) as cp,
        pytest.raises(e.PermissionDeniedError),
    ):
        cp.resync(vault_id)


def test_vaults_and_secrets_by_name_in_every_command(
    fleet: tuple[LiveControlPlane, str, MetadataKey],
) -> None:
    live, vault_id, key = fleet
    other = live.enroll_vault("web-2")
    agent_sends(
        live,
        vault_id,
        ("inventory", inventory_item(key, vault_id, "sec_db", "prod/db")),
        ("inventory", inventory_item(key, vault_id, "sec_api", "prod/api-key")),
    )
    listing = run("vaults", "inventory", "web-1")
    assert listing.exit_code == 0, listing.output
    assert sorted(line.split()[0] for line in listing.stdout.splitlines()[1:]) == [
        "prod/api-key",
        "prod/db",
    ]
    for args in (("show", "web-1"), ("commands", "web-1"), ("show", vault_id)):
        shown = run("vaults", *args)
        assert shown.exit_code == 0, (args, shown.output)
    assert f"id:                    {vault_id}" in run("vaults", "show", "web-1").stdout
    assert other in run("vaults", "show", "web-2").stdout

    sent = run("vaults", "rotate", "web-1", "prod/api-key")
    assert sent.exit_code == 0, sent.output
    assert "(rotate sec_api) is pending" in sent.stdout
    resync = run("vaults", "resync", "web-2")
    assert resync.exit_code == 0 and "(resync) is pending" in resync.stdout
    commands = json.loads(run("vaults", "commands", "web-1", "--json").stdout)
    assert [(c["command"], c["args"]) for c in commands] == [("rotate", {"secret_id": "sec_api"})]

    one_error_line(
        run("vaults", "inventory", "web-9"), 66, "no vault web-9 (by name or id)", "vaults list"
    )
    one_error_line(run("vaults", "rotate", "web-1", "prod/nope"), 66, "no secret 'prod/nope'")
    live.enroll_vault("web-2")  # two vaults of one name: the ids to choose from
    one_error_line(run("vaults", "show", "web-2"), 64, "2 vaults are named 'web-2'", other)

    CredentialStore().delete_metadata_key(live.org_id)  # without the key, names are sealed
    one_error_line(
        run("vaults", "rotate", "web-1", "prod/db"), 66, "keyvault org metadata-key import"
    )


def test_a_failed_command_exits_like_the_same_failure_on_the_agent(
    fleet: tuple[LiveControlPlane, str, MetadataKey],
) -> None:
    """`vaults rotate --wait` ends with the exit code `secrets rotate` has for the same failure;
    the agent's fixed failure texts are the contract."""
    from agent.rotation.engine import RotationFailedError
    from agent.uplink.commands import FAILURES, INTERRUPTED
    from apps.core.outcomes import failure_kind

    live, vault_id, _ = fleet
    for kind, text in FAILURES:
        assert failure_kind(text) is kind
    assert failure_kind(INTERRUPTED) is e.UnavailableError
    rotation_failed = RotationFailedError("verify_failed")
    assert failure_kind("the rotation failed: verify_failed") is type(rotation_failed).__mro__[1]

    for message, code in (
        ("the rotation failed: verify_failed", rotation_failed.exit_code),
        (FAILURES[0][1], e.NotFoundError.exit_code),
    ):
        player = AgentPlayer(live, vault_id, "failed", message)
        player.start()
        failed = run("vaults", "rotate", vault_id, "sec_01", "--wait", "--timeout", "20")
        player.join(25)
        assert player.error is None
        one_error_line(failed, code, message)
