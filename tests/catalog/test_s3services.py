"""Tests for services/catalog/s3services.py (and templates.py): S3 infrastructure-services,
credentials whose secret is encrypted and never shown, and the default S3 service."""

from __future__ import annotations

import json
import stat
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from servicekit.infra import S3Endpoint
from servicekit.security import ADMIN_CLAIM
from servicekit.security.secretbox import SecretBox
from servicekit.testing import app_client
from services.catalog.app import create_app
from services.catalog.settings import CatalogSettings
from services.catalog.tables import catalog_resources

SECRET = "s3cr3t-" + uuid.uuid4().hex


@pytest.fixture
def settings(
    database_url: str, identity_jwks_path: Path, tmp_path: Path, s3_endpoint: S3Endpoint
) -> CatalogSettings:
    return CatalogSettings(
        database_url=database_url,
        identity_jwks=str(identity_jwks_path),
        nats_url="",
        s3_endpoint=s3_endpoint.url,
        s3_access_key=s3_endpoint.access_key,
        s3_secret_key=s3_endpoint.secret_key,
        secrets_key=str(tmp_path / "keys" / "secrets.key"),
    )


@pytest.fixture
def app(settings: CatalogSettings) -> Any:
    return create_app(settings)


@pytest.fixture
async def alice(app: Any, mint_token: Callable[..., str]) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {mint_token('user/alice')}"}
    async with app_client(app, headers=headers) as client:
        yield client


@pytest.fixture
def bob(mint_token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token('user/bob')}"}


async def add_service(client: httpx.AsyncClient, **fields: Any) -> httpx.Response:
    template = {"href": "infrastructure-service-template/generic", "subtype": "s3", **fields}
    return await client.post("/api/infrastructure-service", json={"template": template})


async def add_credential(client: httpx.AsyncClient, parent: str, **fields: Any) -> httpx.Response:
    template = {
        "href": "credential-template/infrastructure-service-minio",
        "parent": parent,
        "access-key": "AKIA-alice",
        "secret-key": SECRET,
        **fields,
    }
    return await client.post("/api/credential", json={"name": "mine", "template": template})


async def alice_credential(alice: httpx.AsyncClient) -> str:
    service = await add_service(alice, endpoint="https://s3.example.org", region="eu")
    assert service.status_code == 201, service.text
    response = await add_credential(alice, service.json()["resource-id"])
    assert response.status_code == 201, response.text
    return response.json()["resource-id"]


async def stored_document(app: Any, resource_id: str) -> dict[str, Any]:
    async with app.state.sessions() as session:
        statement = sa.select(catalog_resources.c.document).where(
            catalog_resources.c.id == resource_id
        )
        return dict((await session.execute(statement)).scalar_one())


async def test_service_and_credential_from_templates(alice: httpx.AsyncClient) -> None:
    credential_id = await alice_credential(alice)
    credential = (await alice.get(f"/api/{credential_id}")).json()
    assert credential["subtype"] == "infrastructure-service-minio"
    assert (credential["access-key"], credential["name"]) == ("AKIA-alice", "mine")
    service = (await alice.get(f"/api/{credential['parent']}")).json()
    assert (service["subtype"], service["endpoint"], service["region"]) == (
        "s3",
        "https://s3.example.org",
        "eu",
    )


async def test_secret_key_never_appears_in_any_response(alice: httpx.AsyncClient) -> None:
    credential_id = await alice_credential(alice)
    responses = [
        await alice.get(f"/api/{credential_id}"),
        await alice.get(f"/api/{credential_id}", params={"select": "secret-key"}),
        await alice.get("/api/credential"),
        await alice.get("/api/credential", params={"select": "secret-key,access-key"}),
        await alice.put("/api/credential", data={"filter": "access-key='AKIA-alice'"}),
        await alice.put(f"/api/{credential_id}", json={"description": "edited"}),
    ]
    for response in responses:
        assert response.status_code == 200, response.text
        assert "secret-key" not in response.text
        assert SECRET not in response.text
    listed = responses[2].json()["resources"]
    assert [r["id"] for r in listed if r["id"] == credential_id] == [credential_id]


async def test_secret_key_is_encrypted_at_rest(
    app: Any, alice: httpx.AsyncClient, settings: CatalogSettings
) -> None:
    credential_id = await alice_credential(alice)
    stored = await stored_document(app, credential_id)
    assert SECRET not in json.dumps(stored)
    box = SecretBox.load_or_create(settings.secrets_key_location())
    assert box.decrypt(stored["secret-key"]) == SECRET


async def test_new_secret_key_is_encrypted_on_edit(
    app: Any, alice: httpx.AsyncClient, settings: CatalogSettings
) -> None:
    credential_id = await alice_credential(alice)
    response = await alice.put(f"/api/{credential_id}", json={"secret-key": "rotated"})
    assert response.status_code == 200, response.text
    assert "rotated" not in response.text
    stored = await stored_document(app, credential_id)
    box = SecretBox.load_or_create(settings.secrets_key_location())
    assert box.decrypt(stored["secret-key"]) == "rotated"


async def test_secrets_key_file_is_created_private(
    alice: httpx.AsyncClient, settings: CatalogSettings
) -> None:
    mode = settings.secrets_key_location().stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"subtype": "kubernetes", "endpoint": "https://k8s"}, "subtype"),
        ({"endpoint": "ftp://s3.example.org"}, "endpoint"),
        ({"endpoint": ""}, "endpoint"),
    ],
)
async def test_bad_infrastructure_service_is_refused(
    alice: httpx.AsyncClient, fields: dict[str, Any], named: str
) -> None:
    response = await add_service(alice, **fields)
    assert response.status_code == 400, response.text
    assert named in response.json()["message"]


async def test_credential_needs_an_s3_service_parent(alice: httpx.AsyncClient) -> None:
    missing = await add_credential(alice, f"infrastructure-service/{uuid.uuid4()}")
    assert missing.status_code == 400
    assert "parent" in missing.json()["message"]
    no_secret = await add_credential(alice, "x", **{"secret-key": ""})
    assert no_secret.status_code == 400
    assert "secret-key" in no_secret.json()["message"]


async def test_credential_of_a_service_the_caller_cannot_see(
    alice: httpx.AsyncClient, bob: dict[str, str]
) -> None:
    service = await add_service(alice, endpoint="https://s3.example.org")
    template = {
        "href": "credential-template/infrastructure-service-minio",
        "parent": service.json()["resource-id"],
        "access-key": "a",
        "secret-key": "b",
    }
    response = await alice.post("/api/credential", json={"template": template}, headers=bob)
    assert response.status_code == 403


async def test_unknown_credential_template_is_refused(alice: httpx.AsyncClient) -> None:
    template = {"href": "credential-template/api-key", "parent": "x"}
    response = await alice.post("/api/credential", json={"template": template})
    assert response.status_code == 400
    assert "template.href" in response.json()["message"]


async def test_default_service_is_usable_by_every_user_without_its_secret(
    alice: httpx.AsyncClient, bob: dict[str, str], s3_endpoint: S3Endpoint
) -> None:
    found = (await alice.get("/api/credential", headers=bob)).json()
    assert found["count"] == 1
    default = found["resources"][0]
    assert default["created-by"] == ADMIN_CLAIM
    assert default["access-key"] == s3_endpoint.access_key
    assert s3_endpoint.secret_key not in json.dumps(found)
    assert {op["rel"] for op in default["operations"]} == set()
    service = (await alice.get(f"/api/{default['parent']}", headers=bob)).json()
    assert service["endpoint"] == s3_endpoint.url
    created = await alice.post("/api/data-object", json={"object": "x"}, headers=bob)
    assert created.status_code == 201, created.text
    data_object = (await alice.get(f"/api/{created.json()['resource-id']}", headers=bob)).json()
    assert data_object["credential"] == default["id"]


async def test_default_service_is_idempotent_across_restarts(
    settings: CatalogSettings, mint_token: Callable[..., str]
) -> None:
    headers = {"Authorization": f"Bearer {mint_token('user/alice')}"}
    seen = []
    for _ in range(2):
        async with app_client(create_app(settings), headers=headers) as client:
            found = (await client.get("/api/credential")).json()
            services = (await client.get("/api/infrastructure-service")).json()
            seen.append(
                (
                    [(r["id"], r["updated"]) for r in found["resources"]],
                    [(r["id"], r["updated"]) for r in services["resources"]],
                )
            )
    assert seen[0] == seen[1]
    assert len(seen[0][0]) == len(seen[0][1]) == 1


async def test_default_credential_follows_changed_keys(
    app: Any, settings: CatalogSettings, mint_token: Callable[..., str]
) -> None:
    headers = {"Authorization": f"Bearer {mint_token('user/alice')}"}
    async with app_client(app, headers=headers):
        pass
    changed = settings.model_copy(update={"s3_secret_key": "new-secret"})
    changed_app = create_app(changed)
    async with app_client(changed_app, headers=headers) as client:
        credential = (await client.get("/api/credential")).json()["resources"][0]
        stored = await stored_document(changed_app, credential["id"])
    box = SecretBox.load_or_create(settings.secrets_key_location())
    assert box.decrypt(stored["secret-key"]) == "new-secret"


async def test_without_default_a_data_object_needs_a_credential(
    settings: CatalogSettings, mint_token: Callable[..., str]
) -> None:
    bare = settings.model_copy(update={"s3_endpoint": ""})
    headers = {"Authorization": f"Bearer {mint_token('user/alice')}"}
    async with app_client(create_app(bare), headers=headers) as client:
        assert (await client.get("/api/credential")).json()["count"] == 0
        response = await client.post("/api/data-object", json={"object": "x"})
        assert response.status_code == 400
        assert "credential" in response.json()["message"]


async def test_readiness_checks_the_default_s3(alice: httpx.AsyncClient) -> None:
    response = await alice.get("/readyz")
    assert response.status_code == 200, response.text
    assert "s3" in response.text


async def test_endpoint_without_keys_refuses_to_start(settings: CatalogSettings) -> None:
    broken = settings.model_copy(update={"s3_secret_key": ""})
    with pytest.raises(ValueError, match="EXTRACT_CATALOG_S3_SECRET_KEY"):
        async with app_client(create_app(broken)):
            pass


async def test_keys_from_a_credentials_file(
    settings: CatalogSettings, s3_endpoint: S3Endpoint, tmp_path: Path, mint_token: Any
) -> None:
    ini = tmp_path / "s3-credentials"
    ini.write_text(
        f"[default]\naws_access_key_id = {s3_endpoint.access_key}\n"
        f"aws_secret_access_key = {s3_endpoint.secret_key}\n"
    )
    from_file = settings.model_copy(
        update={"s3_access_key": "", "s3_secret_key": "", "s3_credentials": f"file:{ini}"}
    )
    headers = {"Authorization": f"Bearer {mint_token('user/alice')}"}
    async with app_client(create_app(from_file), headers=headers) as client:
        assert (await client.get("/readyz")).status_code == 200
        found = (await client.get("/api/credential")).json()["resources"]
        assert [c["access-key"] for c in found] == [s3_endpoint.access_key]
    missing = from_file.model_copy(update={"s3_credentials": f"file:{tmp_path / 'nothing'}"})
    with pytest.raises(ValueError, match="cannot read"):
        async with app_client(create_app(missing)):
            pass


async def test_secret_key_cannot_be_searched_sorted_or_aggregated(
    alice: httpx.AsyncClient,
) -> None:
    await alice_credential(alice)
    for params in (
        {"aggregation": "terms:secret-key"},
        {"filter": "secret-key^='g'"},
        {"orderby": "secret-key"},
    ):
        response = await alice.get("/api/credential", params=params)
        assert response.status_code == 400, response.text
        assert "secret-key" in response.json()["message"]
