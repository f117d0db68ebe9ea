"""``keyvault policies`` end to end against a real control plane and a real Secret Service:
sealed with the keyring's metadata key, every error at once, each named by its option."""

from __future__ import annotations

import json

from apps.core.keyring_store import CredentialStore
from common import intents
from common.cpclient import ControlPlaneClient
from common.metadata_key import MetadataKey
from tests.apps.conftest import LiveControlPlane
from tests.apps.test_cli_operator import login, one_error_line, run


def test_policies_from_the_command_line(
    keyring_env: dict[str, str], live_cp: LiveControlPlane
) -> None:
    login(live_cp)
    for command in ("list", "show", "create", "edit", "delete"):
        assert run("policies", command, "--help").exit_code == 0
    args = ["--name", "db creds", "--glob", "prod/db/*", "--interval-days", "30",
            "--notice-days", "2", "--settings", "length=40"]  # fmt: skip
    one_error_line(run("policies", "create", *args), 78, "metadata-key import")
    key = MetadataKey.generate()
    CredentialStore().set_metadata_key(live_cp.org_id, key)

    made = run("policies", "create", *args, "--json")
    assert made.exit_code == 0, made.output
    doc = json.loads(made.stdout)
    policy_id = doc["id"]
    assert doc["name"] == "db creds" and doc["sealed"]
    with ControlPlaneClient(live_cp.url, live_cp.token()) as cp:
        stored = cp.get_policy(policy_id)
    assert "prod/db" not in json.dumps(stored) and "db creds" not in json.dumps(stored)
    assert intents.IntentKeys(key).open(stored["intent"]).body["selector"] == {
        "name_glob": "prod/db/*"
    }

    listed = run("policies", "list")
    assert listed.exit_code == 0 and "db creds" in listed.stdout and "prod/db/*" in listed.stdout
    shown = run("policies", "show", policy_id)
    assert "interval:  30 days" in shown.stdout and "notice:    2 days" in shown.stdout

    # every problem at once, each named by its option; nothing is created
    bad = run("policies", "create", "--name", "db creds", "--glob", "a*" * 17,
              "--interval-days", "1", "--notice-days", "3", "--rotator", "postgres",
              "--settings", "conection=main, role=app", "--scope", "vlt_nope")  # fmt: skip
    assert bad.exit_code == 64, bad.output
    for fragment in ("--glob:", "--notice-days:", "--settings:", "did you mean 'connection'"):
        assert fragment in bad.stderr, bad.stderr
    duplicate = run("policies", "create", *args)
    one_error_line(duplicate, 65, "already exists")  # a name only apps can see
    missing_vault = run("policies", "create", *args[2:], "--name", "x", "--scope", "vlt_nope")
    one_error_line(missing_vault, 64, "no vault vlt_nope")
    vault_id = live_cp.enroll_vault("web-1")  # a vault by its name, as the apps' forms take it
    named = run("policies", "create", *args[2:], "--name", "web", "--scope", "web-1", "--json")
    assert named.exit_code == 0, named.output
    assert json.loads(named.stdout)["scope"] == {"vault_ids": [vault_id]}
    one_error_line(run("policies", "edit", json.loads(named.stdout)["id"], "--scope", "web-2"),
                   64, "no vault web-2")  # fmt: skip
    assert run("policies", "delete", json.loads(named.stdout)["id"], "--yes").exit_code == 0

    edited = run("policies", "edit", policy_id, "--interval-days", "7", "--json")
    assert edited.exit_code == 0, edited.output
    assert json.loads(edited.stdout)["version"] == 2
    assert json.loads(edited.stdout)["interval_seconds"] == 7 * 86400
    one_error_line(run("policies", "edit", policy_id, "--notice-days", "9"), 64, "shorter")

    assert run("policies", "delete", policy_id, "--yes").exit_code == 0
    assert "no policies yet" in run("policies", "list").stdout
    one_error_line(run("policies", "show", policy_id), 66, f"no policy {policy_id}")
