"""``agent init --join``: a second replica joins the vault in a shared PostgreSQL store (the
Kubernetes operator's replicas > 1), with the same master key, and both serve the same secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import CONFIG_NAME
from agent.crypto import generate_key_file
from agent.provision import InitOptions, initialise
from common.errors import ConfigError, IntegrityError
from tests.conftest import AgentDir, start_agent


def test_a_second_replica_joins_and_serves_the_same_vault(tmp_path: Path, pg_url: str) -> None:
    key = tmp_path / "master.key"
    generate_key_file(key)
    first = initialise(InitOptions(tmp_path / "a", key_file=key, storage_url=pg_url, port=0))
    second = initialise(
        InitOptions(tmp_path / "b", key_file=key, storage_url=pg_url, port=0, join=True)
    )
    assert second.vault_id == first.vault_id and second.admin_token == ""
    assert (tmp_path / "b" / CONFIG_NAME).exists()
    a = start_agent(AgentDir(tmp_path / "a", first.admin_token))
    b = start_agent(AgentDir(tmp_path / "b", first.admin_token))
    try:
        with a.client(first.admin_token) as kv:
            kv.create("db/password", "shared-value-1")
        with b.client(first.admin_token) as kv:  # the first replica's token works on both
            assert kv.get("db/password")["value"] == "shared-value-1"
    finally:
        a.stop()
        b.stop()


def test_join_refuses_a_wrong_key_sqlite_and_an_empty_store(tmp_path: Path, pg_url: str) -> None:
    key, other = tmp_path / "master.key", tmp_path / "other.key"
    generate_key_file(key)
    generate_key_file(other)
    with pytest.raises(ConfigError, match="--join needs --storage-url"):
        initialise(InitOptions(tmp_path / "s", key_file=key, join=True))
    with pytest.raises(Exception, match="holds no vault"):
        initialise(InitOptions(tmp_path / "e", key_file=key, storage_url=pg_url, join=True))
    initialise(InitOptions(tmp_path / "a", key_file=key, storage_url=pg_url, port=0))
    with pytest.raises(IntegrityError):
        initialise(InitOptions(tmp_path / "w", key_file=other, storage_url=pg_url, join=True))
    missing = tmp_path / "nope.key"
    with pytest.raises(ConfigError, match="master key"):
        initialise(InitOptions(tmp_path / "m", key_file=missing, storage_url=pg_url, join=True))
    for folder in ("s", "e", "w", "m"):  # nothing written for a refused join
        assert not (tmp_path / folder / CONFIG_NAME).exists()
    assert not missing.exists()
