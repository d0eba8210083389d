"""The real nuvla-api client logs in through the TLS gateway and works with the real catalog."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import GatewayFactory
from nuvla.api import Api
from nuvla.api.api import NuvlaError

from servicekit.testing import ServiceProcess

ADMIN_PASSWORD = "correct horse battery staple"
SERVICE = "infrastructure-service/s3-edge"


def _client(url: str) -> Api:
    return Api(endpoint=url, persist_cookie=False)


def test_nuvla_client_logs_in_with_an_api_key_and_uses_the_catalog(
    make_gateway: GatewayFactory,
    catalog: ServiceProcess,
    tls_files: tuple[Path, Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # How a user trusts the local stack's CA with requests-based clients.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_files[0]))
    gateway = make_gateway(catalog_url=catalog.url, admin_password=ADMIN_PASSWORD)

    admin = _client(gateway.url)
    assert admin.login_password("admin", ADMIN_PASSWORD).status_code == 201
    assert admin.is_authenticated()
    generated = admin.add(
        "credential", {"template": {"href": "credential-template/generate-api-key"}}
    )
    key, secret = generated.data["key"], generated.data["secret"]

    api = _client(gateway.url)
    assert not api.is_authenticated()
    assert api.login_apikey(key, secret).status_code == 201
    assert api.current_session() is not None

    created = api.add("data-record", {"infrastructure-service": SERVICE, "name": "n", "bytes": 3})
    record_id = created.data["resource-id"]
    found = api.search("data-record", filter="bytes=3")
    assert [r.id for r in found.resources] == [record_id]
    assert found.resources[0].data["acl"]["owners"] == ["user/admin"]
    assert api.get(record_id).data["name"] == "n"
    assert api.delete(record_id).data["status"] == 200

    api.logout()
    assert not api.is_authenticated()
    with pytest.raises(NuvlaError):
        api.add("data-record", {"infrastructure-service": SERVICE, "name": "anonymous"})
