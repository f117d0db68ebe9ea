"""Health, readiness, metrics, the OpenAPI document, metadata key, settings and the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from common.errors import ConfigError
from control_plane.cli import control_plane_group
from control_plane.openapi import openapi_document
from control_plane.routes import PREFIX, ROUTES
from control_plane.settings import ControlPlaneSettings, load_cp_settings
from tests.control_plane.conftest import Api


def test_openapi_matches_every_route_exactly() -> None:
    served = {(m.lower(), PREFIX + p) for m, p, *_ in ROUTES}
    documented = {
        (method, path)
        for path, item in openapi_document()["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert served == documented
    for _, item in openapi_document()["paths"].items():
        for method, op in item.items():
            if method != "parameters":
                assert op["operationId"] and op["responses"]


async def test_health_ready_metrics_openapi(api: Api) -> None:
    status, body = await api.call("GET", "/health")
    assert status == 200 and body["status"] == "alive"
    status, body = await api.call("GET", "/ready")
    assert status == 200 and body["checks"]["database"] == "ok", body
    await api.call("GET", "/me")
    status, text = await api.call("GET", "/metrics")
    assert status == 200
    assert 'keyvault_cp_requests_total{route="me.get",status="401"} 1' in text
    assert "keyvault_cp_stream_subscribers 0" in text
    status, doc = await api.call("GET", "/openapi.json")
    assert status == 200 and doc == openapi_document()


async def test_ready_reports_database_down(api: Api) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    real = api.cp.engine
    api.cp.engine = create_async_engine(
        "postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1}
    )
    try:
        status, body = await api.call("GET", "/ready")
    finally:
        await api.cp.engine.dispose()
        api.cp.engine = real
    assert status == 503 and body["error"]["code"] == "unavailable"


async def test_metadata_key_fingerprint(api: Api) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    fp = "sha256:" + "ab" * 32
    status, body = await api.call("PUT", "/org/metadata-key", owner, json={"fingerprint": fp})
    assert status == 200 and body["fingerprint"] == fp
    assert (await api.call("GET", "/me", owner))[1]["org"]["metadata_key_fingerprint"] == fp
    for bad in ("sha256:xyz", "md5:" + "a" * 64, 5, "sha256:" + "A" * 64):
        status, _ = await api.call("PUT", "/org/metadata-key", owner, json={"fingerprint": bad})
        assert status == 400, bad


def test_settings_errors_name_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYVAULT_CP_DATABASE_URL", "mysql://x")
    with pytest.raises(ConfigError, match="database_url"):
        load_cp_settings()
    monkeypatch.setenv("KEYVAULT_CP_DATABASE_URL", "sqlite+aiosqlite:///x.db")
    monkeypatch.setenv("KEYVAULT_CP_PORT", "99999")
    with pytest.raises(ConfigError, match="KEYVAULT_CP_PORT"):
        load_cp_settings()


def test_ca_key_file(tmp_path: Path) -> None:
    key = tmp_path / "ca.pass"
    key.write_text("from-a-file\n")
    settings = ControlPlaneSettings.model_validate({"ca_key_file": key})
    assert settings.ca_passphrase() == b"from-a-file"
    assert "from-a-file" not in repr(settings)
    assert "s3cret" not in repr(
        ControlPlaneSettings.model_validate({"ca_key_passphrase": "s3cret"})
    )


async def test_missing_ca_passphrase_is_a_clear_error(
    aiohttp_client: Any, settings_factory: Any
) -> None:
    from control_plane.app import build_app
    from tests.control_plane.conftest import Clock

    app = build_app(settings_factory(ca_key_passphrase=None, gateway_enabled=False), clock=Clock())
    client = await aiohttp_client(app)
    api = Api(client, app[__import__("control_plane.views.context").views.context.CP], Clock())
    owner = await api.org("Acme", "owner@acme.test")
    status, body = await api.call("POST", "/enrollment-tokens", owner, json={})
    assert status == 500 and "KEYVAULT_CP_CA_KEY_PASSPHRASE" in body["error"]["message"]


def test_cli_migrate_and_init(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    result = runner.invoke(control_plane_group, ["migrate", "--database-url", url])
    assert result.exit_code == 0, result.output
    env = {
        "KEYVAULT_CP_OWNER_PASSWORD": "a long enough password",
        "KEYVAULT_CP_ARGON2_MEMORY_KIB": "64",
    }
    args = ["init", "--database-url", url, "--org", "Acme", "--email", "o@acme.test"]
    result = runner.invoke(control_plane_group, args, env=env)
    assert result.exit_code == 0, result.output
    assert "created organisation org_" in result.output
    result = runner.invoke(control_plane_group, args, env=env)
    assert result.exit_code != 0 and "already exists" in result.output
    result = runner.invoke(
        control_plane_group,
        ["init", "--database-url", url, "--org", "B", "--email", "b@b.test"],
        env={**env, "KEYVAULT_CP_OWNER_PASSWORD": "short"},
    )
    assert result.exit_code != 0 and "password must be" in result.output


async def test_migrations_match_the_schema(api: Api) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from control_plane.schema import metadata

    def diff(conn: Any) -> list[Any]:
        ctx = MigrationContext.configure(conn, opts={"version_table": "cp_alembic_version"})
        return [d for d in compare_metadata(ctx, metadata) if "alembic" not in str(d)]

    async with api.cp.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


def test_cli_run_refuses_to_start_without_a_ca_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KEYVAULT_CP_CA_KEY_PASSPHRASE", raising=False)
    url = f"sqlite+aiosqlite:///{tmp_path / 'run.db'}"
    result = CliRunner().invoke(control_plane_group, ["run"], env={"KEYVAULT_CP_DATABASE_URL": url})
    assert result.exit_code == 78, result.output
    assert "KEYVAULT_CP_CA_KEY_PASSPHRASE" in result.output
