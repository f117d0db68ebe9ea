"""Saved agent connections: agents.json (0600 in a 0700 folder) plus tokens in the real keyring."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from apps.core.agents import AgentDirectory, AgentProfile, AgentTokenMissingError, agents_path
from apps.core.keyring_store import CredentialStore
from common import errors as e


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_save_list_get_remove_with_the_secret_service(keyring_env: dict[str, str]) -> None:
    agents = AgentDirectory(CredentialStore())
    assert agents.list() == []
    web = AgentProfile.from_data_dir("web", "https://127.0.0.1:8443/", "/srv/web")
    assert web.ca_file == "/srv/web/tls/ca.crt"
    assert (web.cert_file, web.key_file) == ("/srv/web/tls/client.crt", "/srv/web/tls/client.key")

    saved = agents.save(web, "kvt_web_token")
    assert saved.url == "https://127.0.0.1:8443"
    agents.save(AgentProfile("Db", "https://db.internal:8443"), "kvt_db_token")
    assert [a.name for a in agents.list()] == ["Db", "web"]
    assert agents.get("web") == saved
    assert agents.token(saved) == "kvt_web_token"

    path = agents_path()
    assert path == Path(keyring_env["XDG_CONFIG_HOME"]) / "keyvault" / "agents.json"
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
    text = path.read_text()
    assert "kvt_" not in text  # tokens only in the keyring
    assert json.loads(text)["agents"][1]["ca_file"] == "/srv/web/tls/ca.crt"

    # another process (a fresh directory and store) sees the same
    again = AgentDirectory(CredentialStore())
    assert again.token(again.get("Db")) == "kvt_db_token"

    # replacing by name keeps one entry
    agents.save(AgentProfile("web", "https://127.0.0.1:8443"), "kvt_new")
    assert [a.name for a in agents.list()] == ["Db", "web"]
    assert agents.token(agents.get("web")) == "kvt_new"

    agents.remove("web")
    assert [a.name for a in agents.list()] == ["Db"]
    assert CredentialStore().get_agent_token("https://127.0.0.1:8443") is None
    with pytest.raises(e.NotFoundError, match="no saved agent named 'web'"):
        agents.get("web")
    with pytest.raises(e.NotFoundError):
        agents.remove("web")


def test_a_missing_token_says_what_to_do(tmp_path: Path) -> None:
    agents = AgentDirectory(CredentialStore.memory(), tmp_path / "agents.json")
    profile = agents.save(AgentProfile("web", "https://h:1"), "kvt_x")
    agents.store.delete_agent_token(profile.url)
    with pytest.raises(AgentTokenMissingError) as info:
        agents.token(profile)
    assert "no token for agent web" in info.value.message and "connect" in info.value.message


def test_two_names_for_one_url_share_the_token(tmp_path: Path) -> None:
    agents = AgentDirectory(CredentialStore.memory(), tmp_path / "agents.json")
    agents.save(AgentProfile("a", "https://h:1"), "kvt_x")
    agents.save(AgentProfile("b", "https://H:1/"), "kvt_x")
    agents.remove("a")
    assert agents.token(agents.get("b")) == "kvt_x"


@pytest.mark.parametrize(
    ("profile", "token", "field"),
    [
        (AgentProfile(" ", "https://h:1"), "t", "name"),
        (AgentProfile("x", "h:1"), "t", "url"),
        (AgentProfile("x", "https://"), "t", "url"),
        (AgentProfile("x", "https://h:1"), "  ", "token"),
    ],
)
def test_bad_input_is_tagged(tmp_path: Path, profile: AgentProfile, token: str, field: str) -> None:
    agents = AgentDirectory(CredentialStore.memory(), tmp_path / "agents.json")
    with pytest.raises(e.ValidationError) as info:
        agents.save(profile, token)
    assert info.value.details == {"field": field}
    assert not (tmp_path / "agents.json").exists()


def test_a_damaged_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "agents.json"
    agents = AgentDirectory(CredentialStore.memory(), path)
    for text in ("{not json", '{"agents": {}}', '{"agents": [{"name": 1}]}'):
        path.write_text(text)
        with pytest.raises(e.ConfigError, match="cannot be read"):
            agents.list()


def test_unknown_keys_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "agents.json"
    path.write_text('{"agents": [{"name": "x", "url": "https://h:1", "colour": "red"}]}')
    assert AgentDirectory(CredentialStore.memory(), path).list() == [
        AgentProfile("x", "https://h:1")
    ]
