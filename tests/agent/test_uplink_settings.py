"""Uplink settings: defaults, ``KEYVAULT_UPLINK__…`` variables, clear errors, the metadata key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.assembly import Agent
from agent.settings import AgentSettings, load_agent_settings
from agent.uplink.service import Uplink
from common.errors import ConfigError
from common.metadata_key import MetadataKey
from common.settings import load_settings
from tests.conftest import init_agent_dir


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("KEYVAULT_"):
            monkeypatch.delenv(key)


def test_defaults_follow_the_protocol_document() -> None:
    up = AgentSettings().uplink
    assert (up.heartbeat_interval, up.backoff_base, up.backoff_cap) == (30, 0.5, 60)
    assert (up.batch_size, up.renew_at, up.trace_file) == (500, 0.667, None)
    for name, field in type(up).model_fields.items():
        assert field.description, name


def test_environment_variables_set_nested_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYVAULT_UPLINK__HEARTBEAT_INTERVAL", "5")
    monkeypatch.setenv("KEYVAULT_UPLINK__BACKOFF_CAP", "10")
    monkeypatch.setenv("KEYVAULT_UPLINK__BATCH_SIZE", "100")
    up = load_settings(AgentSettings).uplink
    assert (up.heartbeat_interval, up.backoff_cap, up.batch_size) == (5, 10, 100)


@pytest.mark.parametrize(
    ("var", "value", "says"),
    [
        ("KEYVAULT_UPLINK__BATCH_SIZE", "501", "uplink.batch_size (KEYVAULT_UPLINK__BATCH_SIZE)"),
        ("KEYVAULT_UPLINK__RENEW_AT", "1.5", "uplink.renew_at"),
        ("KEYVAULT_UPLINK__BACKOFF_CAP", "0.1", "backoff_base must not be larger"),
    ],
)
def test_bad_values_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, says: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(AgentSettings)
    assert says in caught.value.message


def test_the_metadata_key_file_defaults_to_the_data_folder(tmp_path: Path) -> None:
    s = AgentSettings(data_dir=tmp_path)
    assert s.metadata_key_path is None
    MetadataKey.generate().save(tmp_path / "metadata.key")
    assert s.metadata_key_path == tmp_path / "metadata.key"
    other = tmp_path / "elsewhere.key"
    assert AgentSettings(data_dir=tmp_path, metadata_key_file=other).metadata_key_path == other


def test_a_broken_metadata_key_stops_the_start_with_a_clear_error(tmp_path: Path) -> None:
    folder = init_agent_dir(tmp_path / "agent")
    (folder.path / "metadata.key").write_text("not a key\n")
    agent = Agent.open(load_agent_settings(None, folder.path))
    try:
        with pytest.raises(ConfigError) as caught:
            Uplink(agent).prepare()
        assert "metadata.key" in caught.value.message and "kvmk1:" in caught.value.message
    finally:
        agent.close()
