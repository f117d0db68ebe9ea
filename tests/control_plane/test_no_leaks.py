"""Secrets are never printed: tokens and passwords stay out of the logs and of Redis."""

from __future__ import annotations

import logging

import pytest

from common.pki import make_csr
from tests.control_plane.conftest import PASSWORD, Api
from tests.control_plane.test_vaults import enroll_token, register


async def test_tokens_and_passwords_never_logged(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    owner = await api.org("Acme", "owner@acme.test")
    _status, inv = await api.call(
        "POST", "/invitations", owner, json={"email": "v@acme.test", "role": "viewer"}
    )
    await api.call(
        "POST", "/invitations/accept", json={"token": inv["token"], "password": PASSWORD}
    )
    enrollment = await enroll_token(api, owner)
    await register(api, enrollment, make_csr("x")[0])
    await api.call("POST", "/auth/login", json={"email": "owner@acme.test", "password": "bad pw"})
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    for secret in (
        owner,
        inv["token"],
        enrollment,
        enrollment.split(".")[0],
        PASSWORD,
        "bad pw",
        "test-ca-passphrase",
    ):
        assert secret not in logged
    if api.cp.redis is not None:
        prefix = api.cp.settings.redis_prefix
        dump = ""
        async for key in api.cp.redis.scan_iter(match=f"{prefix}:*"):
            dump += str(key) + str(await api.cp.redis.dump(key))
        for secret in (owner, inv["token"], enrollment, PASSWORD, "owner@acme.test"):
            assert secret not in dump


def test_settings_reject_a_non_http_webhook() -> None:
    from control_plane.settings import ControlPlaneSettings

    with pytest.raises(ValueError, match="webhook_url"):
        ControlPlaneSettings.model_validate({"webhook_url": "file:///etc/passwd"})
