"""Settings: file < environment < flags, the seed's variable names, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.settings import AgentSettings
from common.errors import ConfigError
from common.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("KEYVAULT_") or key in ("VAULT_MASTER_KEY_FILE", "CONTROL_PLANE_URL"):
            monkeypatch.delenv(key)


def test_precedence_file_env_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        "port: 7000\nbind: 127.0.0.2\ntls:\n  client_cert: none\nstorage:\n  sqlite_synchronous: NORMAL\n"
    )
    s = load_settings(AgentSettings, cfg)
    assert (s.port, s.bind, s.tls.client_cert, s.storage.sqlite_synchronous) == (
        7000,
        "127.0.0.2",
        "none",
        "NORMAL",
    )
    monkeypatch.setenv("KEYVAULT_PORT", "7100")
    monkeypatch.setenv("KEYVAULT_TLS__CLIENT_CERT", "required")
    s = load_settings(AgentSettings, cfg)
    assert (
        s.port == 7100
        and s.tls.client_cert == "required"
        and s.storage.sqlite_synchronous == "NORMAL"
    )
    s = load_settings(AgentSettings, cfg, {"port": 7200, "bind": None})
    assert s.port == 7200 and s.bind == "127.0.0.2"


def test_seed_variable_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_MASTER_KEY_FILE", "/app/config/master.key")
    monkeypatch.setenv("CONTROL_PLANE_URL", "https://api.keyvault.example")
    s = load_settings(AgentSettings)
    assert s.master_key_file == Path("/app/config/master.key")
    assert s.control_plane_url == "https://api.keyvault.example"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"KEYVAULT_PORT": "eighty"}, "port (KEYVAULT_PORT)"),
        ({"KEYVAULT_PORT": "70000"}, "port (KEYVAULT_PORT)"),
        ({"KEYVAULT_TLS__CLIENT_CERT": "maybe"}, "tls.client_cert (KEYVAULT_TLS__CLIENT_CERT)"),
        ({"KEYVAULT_KDF_ITERATIONS": "50000"}, "kdf_iterations"),
        (
            {"KEYVAULT_TLS__ENABLED": "false", "KEYVAULT_BIND": "0.0.0.0"},
            "only allowed when bind is a loopback",
        ),
        ({"KEYVAULT_MASTER_PASSPHRASE": "x" * 20, "VAULT_MASTER_KEY_FILE": "/k"}, "not both"),
        ({"KEYVAULT_LOG_FORMAT": "xml"}, "log_format"),
    ],
)
def test_invalid_values_name_the_key(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], needle: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as err:
        load_settings(AgentSettings)
    assert needle in str(err.value)
    assert err.value.exit_code == 78


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(AgentSettings, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("port: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(AgentSettings, bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(AgentSettings, bad)
    bad.write_text("prot: 8080\n")
    with pytest.raises(ConfigError, match="prot"):
        load_settings(AgentSettings, bad)


def test_passphrase_is_never_shown() -> None:
    s = load_settings(AgentSettings, None, {"master_passphrase": "correct horse battery staple"})
    assert "correct horse" not in repr(s) and "correct horse" not in str(s.model_dump())
