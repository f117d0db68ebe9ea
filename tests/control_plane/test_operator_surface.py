"""What the operator API shows about itself: the stream's authentication in the OpenAPI
document, and a /metrics page with nothing per organisation for an anonymous caller."""

from __future__ import annotations

import re

from control_plane.openapi import openapi_document
from tests.control_plane.conftest import Api
from tests.control_plane.test_policies_alerts import new_vault


def test_openapi_describes_how_the_stream_authenticates() -> None:
    op = openapi_document()["paths"]["/api/v1/stream"]["get"]
    assert {"session": []} in op["security"]  # Authorization: Bearer kvs_… on the upgrade
    text = op["description"]
    assert "Authorization: Bearer kvs_" in text and '"type": "auth"' in text
    assert "4401" in text and "401" in op["responses"]
    assert set(op["x-websocket-close-codes"]) == {"4401", "4408"}
    schemes = openapi_document()["components"]["securitySchemes"]
    assert schemes["session"] == {"type": "http", "scheme": "bearer"}


async def test_metrics_show_nothing_per_organisation_to_anonymous_callers(api: Api) -> None:
    secrets_of_tenants = []
    for name in ("Acme Payments", "Globex Secret Project"):
        email = f"owner@{name.split()[0].lower()}.test"
        token = await api.org(name, email)
        vault = await new_vault(api, token)
        await api.call("GET", f"/vaults/{vault}", token)
        await api.call("GET", "/alerts", token)
        status, me = await api.call("GET", "/me", token)
        assert status == 200
        secrets_of_tenants += [name, email, vault, me["org"]["id"], me["user"]["id"], token]
    status, text = await api.call("GET", "/metrics")
    assert status == 200 and "keyvault_cp_requests_total" in text
    for value in secrets_of_tenants:
        assert value not in text
    labels = set(re.findall(r"[{,]([a-z_]+)=", text))
    assert labels <= {"route", "status", "le", "method"}, labels
    assert not re.search(r"(org|tenant|vault_id|user)", " ".join(labels))
