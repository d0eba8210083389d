"""Tests for services/catalog/dataobjects.py (and modelrecords.py): the data-object lifecycle
through the HTTP API, against the harness's real SeaweedFS, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiobotocore.client import AioBaseClient

from servicekit.errors import NotFound
from servicekit.infra import S3Endpoint, free_port
from servicekit.s3 import s3_client, stream_hash
from servicekit.testing import app_client
from services.catalog.app import create_app
from services.catalog.settings import CatalogSettings

CONTENT = b"spectrum 42\n" * 1000
MD5 = hashlib.md5(CONTENT).hexdigest()
SHA256 = hashlib.sha256(CONTENT).hexdigest()
SERVICE = "infrastructure-service/s3-edge"


@pytest.fixture
def bucket() -> str:
    return f"do-{uuid.uuid4().hex[:12]}"


def settings_for(
    database_url: str, jwks: Path, tmp_path: Path, s3: S3Endpoint, bucket: str, **extra: Any
) -> CatalogSettings:
    return CatalogSettings(
        database_url=database_url,
        identity_jwks=str(jwks),
        nats_url="",
        s3_endpoint=s3.url,
        s3_access_key=s3.access_key,
        s3_secret_key=s3.secret_key,
        s3_region=s3.region,
        s3_bucket=bucket,
        secrets_key=str(tmp_path / "keys" / "secrets.key"),
        **extra,
    )


@pytest.fixture
def settings(
    sqlite_database_url: str,
    identity_jwks_path: Path,
    tmp_path: Path,
    s3_endpoint: S3Endpoint,
    bucket: str,
) -> CatalogSettings:
    return settings_for(sqlite_database_url, identity_jwks_path, tmp_path, s3_endpoint, bucket)


@pytest.fixture
async def alice(
    settings: CatalogSettings, mint_token: Callable[..., str]
) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {mint_token('user/alice')}"}
    async with app_client(create_app(settings), headers=headers) as client:
        yield client


@pytest.fixture
def bob(mint_token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token('user/bob')}"}


@pytest.fixture
async def s3(s3_endpoint: S3Endpoint) -> AsyncIterator[AioBaseClient]:
    async with s3_client(s3_endpoint) as client:
        yield client


async def create(client: httpx.AsyncClient, template: dict[str, Any], **kw: Any) -> str:
    body = {"template": {"href": "data-object-template/generic", **template}}
    response = await client.post("/api/data-object", json=body, **kw)
    assert response.status_code == 201, response.text
    return response.json()["resource-id"]


async def act(
    client: httpx.AsyncClient, resource_id: str, action: str, **kw: Any
) -> httpx.Response:
    return await client.post(f"/api/{resource_id}/{action}", **kw)


async def put_bytes(
    client: httpx.AsyncClient, resource_id: str, content: bytes, content_type: str | None = None
) -> None:
    response = await act(client, resource_id, "upload")
    assert response.status_code == 200, response.text
    headers = {"content-type": content_type} if content_type else {}
    async with httpx.AsyncClient() as plain:
        put = await plain.put(response.json()["uri"], content=content, headers=headers)
    assert put.status_code == 200, put.text


async def uploaded(client: httpx.AsyncClient, fields: dict[str, Any] | None = None) -> str:
    """A data-object in state UPLOADING whose object holds CONTENT."""
    resource_id = await create(client, {"object": f"obj-{uuid.uuid4().hex}", **(fields or {})})
    await put_bytes(client, resource_id, CONTENT)
    return resource_id


def operations(document: dict[str, Any]) -> set[str]:
    return {op["rel"] for op in document["operations"]}


async def test_full_flow_upload_ready_download(
    database_url: str,
    identity_jwks_path: Path,
    tmp_path: Path,
    s3_endpoint: S3Endpoint,
    bucket: str,
    mint_token: Callable[..., str],
) -> None:
    settings = settings_for(database_url, identity_jwks_path, tmp_path, s3_endpoint, bucket)
    headers = {"Authorization": f"Bearer {mint_token('user/alice')}"}
    async with app_client(create_app(settings), headers=headers) as alice:
        resource_id = await create(
            alice, {"object": "raw/spectrum.bin", "content-type": "application/octet-stream"}
        )
        new = (await alice.get(f"/api/{resource_id}")).json()
        assert (new["state"], new["bucket"], new["subtype"]) == ("NEW", bucket, "generic")
        assert new["credential"].startswith("credential/")
        assert operations(new) == {"edit", "delete", "upload"}

        await put_bytes(alice, resource_id, CONTENT, "application/octet-stream")
        uploading = (await alice.get(f"/api/{resource_id}")).json()
        assert uploading["state"] == "UPLOADING"
        assert operations(uploading) == {"edit", "delete", "upload", "ready"}

        response = await act(alice, resource_id, "ready")
        assert response.status_code == 200, response.text
        ready = (await alice.get(f"/api/{resource_id}")).json()
        assert ready["state"] == "READY"
        assert (ready["bytes"], ready["md5sum"], ready["sha256"]) == (len(CONTENT), MD5, SHA256)
        assert operations(ready) == {"edit", "delete", "download"}

        response = await act(alice, resource_id, "download")
        assert response.status_code == 303
        assert response.headers["location"] == response.json()["uri"]
        async with httpx.AsyncClient(follow_redirects=True) as plain:
            downloaded = await plain.get(response.headers["location"])
        assert downloaded.content == CONTENT


@pytest.mark.parametrize(
    ("declared", "named"),
    [
        ({"bytes": len(CONTENT) + 1}, "bytes"),
        ({"md5sum": "0" * 32}, "md5sum"),
        ({"sha256": "f" * 64}, "sha256"),
    ],
)
async def test_ready_refuses_an_object_unlike_the_declared_one(
    alice: httpx.AsyncClient, declared: dict[str, Any], named: str
) -> None:
    resource_id = await uploaded(alice, declared)
    response = await act(alice, resource_id, "ready")
    assert response.status_code == 412, response.text
    assert named in response.json()["message"]
    assert (await alice.get(f"/api/{resource_id}")).json()["state"] == "UPLOADING"


async def test_ready_accepts_the_declared_values(alice: httpx.AsyncClient) -> None:
    resource_id = await uploaded(alice, {"bytes": len(CONTENT), "md5sum": MD5, "sha256": SHA256})
    response = await act(alice, resource_id, "ready")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "READY"


async def test_ready_refuses_a_missing_object(alice: httpx.AsyncClient) -> None:
    resource_id = await create(alice, {"object": "never-uploaded"})
    assert (await act(alice, resource_id, "upload")).status_code == 200
    response = await act(alice, resource_id, "ready")
    assert response.status_code == 409, response.text
    assert "does not exist" in response.json()["message"]
    assert (await alice.get(f"/api/{resource_id}")).json()["state"] == "UPLOADING"


async def put_check_value(s3: AioBaseClient, bucket: str, key: str, digest: str) -> None:
    await s3.put_object(Bucket=bucket, Key=f"{key}.sha256asc", Body=f"{digest}  {key}\n".encode())


async def test_ready_verifies_a_check_value(
    alice: httpx.AsyncClient, s3: AioBaseClient, bucket: str
) -> None:
    resource_id = await uploaded(alice, {"check-value": True})
    stored = (await alice.get(f"/api/{resource_id}")).json()
    assert stored["check-value"] == f"{stored['object']}.sha256asc"
    await put_check_value(s3, bucket, stored["object"], SHA256)
    response = await act(alice, resource_id, "ready")
    assert response.status_code == 200, response.text
    ready = (await alice.get(f"/api/{resource_id}")).json()
    assert (ready["check-value-verified"], ready["check-value-algorithm"]) == (True, "sha256")


async def test_ready_refuses_a_wrong_check_value(
    alice: httpx.AsyncClient, s3: AioBaseClient, bucket: str
) -> None:
    resource_id = await uploaded(alice, {"check-value": True})
    key = (await alice.get(f"/api/{resource_id}")).json()["object"]
    await put_check_value(s3, bucket, key, "0" * 64)
    response = await act(alice, resource_id, "ready")
    assert response.status_code == 412, response.text
    assert "check value" in response.json()["message"]
    assert (await alice.get(f"/api/{resource_id}")).json()["state"] == "UPLOADING"


async def test_ready_refuses_a_missing_check_value(alice: httpx.AsyncClient) -> None:
    resource_id = await uploaded(alice, {"check-value": True})
    response = await act(alice, resource_id, "ready")
    assert response.status_code == 409, response.text
    assert "sha256asc" in response.json()["message"]


async def test_check_value_algorithm_comes_from_settings(
    settings: CatalogSettings, mint_token: Callable[..., str], s3: AioBaseClient, bucket: str
) -> None:
    settings = settings.model_copy(update={"check_value_algorithm": "sha512"})
    headers = {"Authorization": f"Bearer {mint_token('user/alice')}"}
    async with app_client(create_app(settings), headers=headers) as alice:
        refused = await alice.post(
            "/api/data-object", json={"object": "m.onnx", "check-value": "m.onnx.sha256asc"}
        )
        assert refused.status_code == 400
        assert "m.onnx.sha512asc" in refused.json()["message"]
        resource_id = await uploaded(alice, {"check-value": True})
        key = (await alice.get(f"/api/{resource_id}")).json()["object"]
        digest = hashlib.sha512(CONTENT).hexdigest()
        await s3.put_object(Bucket=bucket, Key=f"{key}.sha512asc", Body=digest.encode())
        response = await act(alice, resource_id, "ready")
        assert response.status_code == 200, response.text
        ready = (await alice.get(f"/api/{resource_id}")).json()
        assert ready["check-value-algorithm"] == "sha512"


@pytest.mark.parametrize("action", ["ready", "download"])
async def test_actions_refused_on_a_new_data_object(alice: httpx.AsyncClient, action: str) -> None:
    resource_id = await create(alice, {"object": "x"})
    before = (await alice.get(f"/api/{resource_id}")).json()
    response = await act(alice, resource_id, action)
    assert response.status_code == 409, response.text
    assert f"Invalid state 'NEW' for '{action}' action" in response.json()["message"]
    assert (await alice.get(f"/api/{resource_id}")).json() == before


async def test_upload_refused_once_ready(alice: httpx.AsyncClient) -> None:
    resource_id = await uploaded(alice)
    assert (await act(alice, resource_id, "ready")).status_code == 200
    response = await act(alice, resource_id, "upload")
    assert response.status_code == 409
    assert "Invalid state 'READY' for 'upload' action" in response.json()["message"]
    assert (await act(alice, resource_id, "ready")).status_code == 409


async def test_unknown_action_is_404(alice: httpx.AsyncClient) -> None:
    resource_id = await create(alice, {"object": "x"})
    response = await act(alice, resource_id, "explode")
    assert response.status_code == 404
    assert "explode" in response.json()["message"]


@pytest.mark.parametrize("ttl", [0, -5, "60", 10**9, True])
async def test_upload_ttl_is_bounded(alice: httpx.AsyncClient, ttl: Any) -> None:
    resource_id = await create(alice, {"object": "x"})
    response = await act(alice, resource_id, "upload", json={"ttl": ttl})
    assert response.status_code == 400, response.text
    assert "ttl" in response.json()["message"]
    assert (await alice.get(f"/api/{resource_id}")).json()["state"] == "NEW"


async def test_upload_presigns_with_the_given_ttl(alice: httpx.AsyncClient) -> None:
    resource_id = await create(alice, {"object": "x"})
    response = await act(alice, resource_id, "upload", json={"ttl": 120})
    assert response.status_code == 200, response.text
    assert "X-Amz-Expires=120" in response.json()["uri"]


async def test_unknown_template_is_refused(alice: httpx.AsyncClient) -> None:
    body = {"template": {"href": "data-object-template/magic", "object": "x"}}
    response = await alice.post("/api/data-object", json=body)
    assert response.status_code == 400
    assert "data-object-template/generic" in response.json()["message"]
    assert (await alice.get("/api/data-object", params={"last": 0})).json()["count"] == 0


async def test_fields_without_template_are_accepted(alice: httpx.AsyncClient) -> None:
    response = await alice.post("/api/data-object", json={"object": "plain", "state": "READY"})
    assert response.status_code == 201, response.text
    stored = (await alice.get(f"/api/{response.json()['resource-id']}")).json()
    assert (stored["state"], stored["subtype"]) == ("NEW", "generic")


@pytest.mark.parametrize(
    "change", [{"object": "elsewhere"}, {"bucket": "other-bucket"}, {"state": "READY"}]
)
async def test_edit_cannot_change_fixed_attributes(
    alice: httpx.AsyncClient, change: dict[str, Any]
) -> None:
    resource_id = await create(alice, {"object": "x"})
    response = await alice.put(f"/api/{resource_id}", json=change)
    assert response.status_code == 409, response.text
    stored = (await alice.get(f"/api/{resource_id}")).json()
    assert (stored["object"], stored["state"]) == ("x", "NEW")
    assert (await alice.put(f"/api/{resource_id}", json={"name": "ok"})).status_code == 200


async def test_measured_values_are_fixed_once_ready(alice: httpx.AsyncClient) -> None:
    resource_id = await uploaded(alice)
    assert (await act(alice, resource_id, "ready")).status_code == 200
    response = await alice.put(f"/api/{resource_id}", json={"bytes": 1})
    assert response.status_code == 409
    assert (await alice.get(f"/api/{resource_id}")).json()["bytes"] == len(CONTENT)


async def object_exists(s3: AioBaseClient, bucket: str, key: str) -> bool:
    try:
        await stream_hash(s3, bucket, key, ["sha256"])
    except NotFound:
        return False
    return True


@pytest.mark.parametrize(
    ("how", "kept"),
    [
        ({}, False),
        ({"params": {"keep-s3-object": "true"}}, True),
        ({"params": {"keep-s3-object": "false"}}, False),
        ({"json": {"keep-s3-object": True}}, True),
    ],
)
async def test_delete_removes_the_s3_object_unless_kept(
    alice: httpx.AsyncClient, s3: AioBaseClient, bucket: str, how: dict[str, Any], kept: bool
) -> None:
    resource_id = await uploaded(alice)
    assert (await act(alice, resource_id, "ready")).status_code == 200
    key = (await alice.get(f"/api/{resource_id}")).json()["object"]
    response = await alice.request("DELETE", f"/api/{resource_id}", **how)
    assert response.status_code == 200, response.text
    assert response.json()["message"] == f"{resource_id} deleted"
    assert (await alice.get(f"/api/{resource_id}")).status_code == 404
    assert await object_exists(s3, bucket, key) is kept


async def test_delete_refused_keeps_record_and_object(
    alice: httpx.AsyncClient, bob: dict[str, str], s3: AioBaseClient, bucket: str
) -> None:
    resource_id = await uploaded(alice)
    key = (await alice.get(f"/api/{resource_id}")).json()["object"]
    assert (await alice.delete(f"/api/{resource_id}", headers=bob)).status_code == 403
    assert (await alice.get(f"/api/{resource_id}")).status_code == 200
    assert await object_exists(s3, bucket, key)


async def test_bad_keep_s3_object_is_refused(alice: httpx.AsyncClient) -> None:
    resource_id = await create(alice, {"object": "x"})
    response = await alice.delete(f"/api/{resource_id}", params={"keep-s3-object": "maybe"})
    assert response.status_code == 400
    assert (await alice.get(f"/api/{resource_id}")).status_code == 200


async def test_another_user_cannot_run_the_actions(
    alice: httpx.AsyncClient, bob: dict[str, str]
) -> None:
    resource_id = await create(alice, {"object": "x"})
    assert (await act(alice, resource_id, "upload", headers=bob)).status_code == 403
    await put_bytes(alice, resource_id, CONTENT)
    assert (await act(alice, resource_id, "ready", headers=bob)).status_code == 403
    assert (await act(alice, resource_id, "ready")).status_code == 200
    assert (await act(alice, resource_id, "download", headers=bob)).status_code == 403


async def test_a_shared_reader_may_download_but_not_upload(
    alice: httpx.AsyncClient, bob: dict[str, str]
) -> None:
    acl = {"owners": ["user/alice"], "view-data": ["user/bob"]}
    resource_id = await create(alice, {"object": "x", "acl": acl})
    as_bob = (await alice.get(f"/api/{resource_id}", headers=bob)).json()
    assert operations(as_bob) == set()
    await put_bytes(alice, resource_id, CONTENT)
    assert (await act(alice, resource_id, "ready")).status_code == 200
    as_bob = (await alice.get(f"/api/{resource_id}", headers=bob)).json()
    assert operations(as_bob) == {"download"}
    assert (await act(alice, resource_id, "download", headers=bob)).status_code == 303


async def test_public_data_object_is_downloadable_by_any_user(
    alice: httpx.AsyncClient, bob: dict[str, str]
) -> None:
    body = {"template": {"href": "data-object-template/public", "object": "open.txt"}}
    resource_id = (await alice.post("/api/data-object", json=body)).json()["resource-id"]
    await put_bytes(alice, resource_id, CONTENT)
    assert (await act(alice, resource_id, "ready")).status_code == 200
    as_bob = (await alice.get(f"/api/{resource_id}", headers=bob)).json()
    assert as_bob["subtype"] == "public"
    assert operations(as_bob) == {"download"}
    response = await act(alice, resource_id, "download", headers=bob)
    assert response.status_code == 303, response.text


async def test_user_cannot_use_another_users_credential(
    alice: httpx.AsyncClient, bob: dict[str, str], s3_endpoint: S3Endpoint
) -> None:
    service = await alice.post(
        "/api/infrastructure-service",
        json={
            "template": {
                "href": "infrastructure-service-template/generic",
                "subtype": "s3",
                "endpoint": s3_endpoint.url,
            }
        },
    )
    assert service.status_code == 201, service.text
    credential = await alice.post(
        "/api/credential",
        json={
            "template": {
                "href": "credential-template/infrastructure-service-minio",
                "parent": service.json()["resource-id"],
                "access-key": s3_endpoint.access_key,
                "secret-key": s3_endpoint.secret_key,
            }
        },
    )
    assert credential.status_code == 201, credential.text
    mine = {"object": "x", "credential": credential.json()["resource-id"]}
    response = await alice.post("/api/data-object", json=mine, headers=bob)
    assert response.status_code == 403, response.text
    assert "view-data" in response.json()["message"]
    assert (await alice.post("/api/data-object", json=mine)).status_code == 201


async def test_data_object_with_an_unknown_credential_is_refused(alice: httpx.AsyncClient) -> None:
    body = {"object": "x", "credential": f"credential/{uuid.uuid4()}"}
    response = await alice.post("/api/data-object", json=body)
    assert response.status_code == 400
    assert "not found" in response.json()["message"]


# --- model data-records --------------------------------------------------------------------


async def verified_model(alice: httpx.AsyncClient, s3: AioBaseClient, bucket: str) -> str:
    resource_id = await uploaded(alice, {"check-value": True})
    key = (await alice.get(f"/api/{resource_id}")).json()["object"]
    await put_check_value(s3, bucket, key, SHA256)
    assert (await act(alice, resource_id, "ready")).status_code == 200
    return resource_id


def model_record(data_object: str, **extra: Any) -> dict[str, Any]:
    return {
        "infrastructure-service": SERVICE,
        "model:name": "flood-net",
        "model:version": "3",
        "resource:object": data_object,
        **extra,
    }


async def test_model_record_of_a_verified_data_object(
    alice: httpx.AsyncClient, s3: AioBaseClient, bucket: str
) -> None:
    data_object = await verified_model(alice, s3, bucket)
    response = await alice.post("/api/data-record", json=model_record(data_object))
    assert response.status_code == 201, response.text
    record = (await alice.get(f"/api/{response.json()['resource-id']}")).json()
    assert record["model:hash-algo"] == "sha256"


async def test_model_record_refuses_an_unverified_data_object(alice: httpx.AsyncClient) -> None:
    data_object = await uploaded(alice)
    response = await alice.post("/api/data-record", json=model_record(data_object))
    assert response.status_code == 409
    assert "READY" in response.json()["message"]
    assert (await act(alice, data_object, "ready")).status_code == 200
    response = await alice.post("/api/data-record", json=model_record(data_object))
    assert response.status_code == 409
    assert "no verified check value" in response.json()["message"]
    assert (await alice.get("/api/data-record", params={"last": 0})).json()["count"] == 0


async def test_model_record_needs_its_object_and_matching_algorithm(
    alice: httpx.AsyncClient, s3: AioBaseClient, bucket: str
) -> None:
    record = {k: v for k, v in model_record("x").items() if k != "resource:object"}
    response = await alice.post("/api/data-record", json=record)
    assert response.status_code == 400
    assert "resource:object" in response.json()["message"]
    data_object = await verified_model(alice, s3, bucket)
    wrong = model_record(data_object, **{"model:hash-algo": "sha512"})
    response = await alice.post("/api/data-record", json=wrong)
    assert response.status_code == 400
    assert "sha256" in response.json()["message"]


async def test_model_record_needs_sight_of_the_data_object(
    alice: httpx.AsyncClient, bob: dict[str, str], s3: AioBaseClient, bucket: str
) -> None:
    data_object = await verified_model(alice, s3, bucket)
    response = await alice.post("/api/data-record", json=model_record(data_object), headers=bob)
    assert response.status_code == 403


# --- S3 failures ------------------------------------------------------------------------------


async def own_credential(client: httpx.AsyncClient, endpoint: str, key: str, secret: str) -> str:
    template = {"href": "infrastructure-service-template/generic", "subtype": "s3"}
    service = await client.post(
        "/api/infrastructure-service", json={"template": {**template, "endpoint": endpoint}}
    )
    assert service.status_code == 201, service.text
    credential = {
        "href": "credential-template/infrastructure-service-minio",
        "parent": service.json()["resource-id"],
        "access-key": key,
        "secret-key": secret,
    }
    response = await client.post("/api/credential", json={"template": credential})
    assert response.status_code == 201, response.text
    return response.json()["resource-id"]


async def test_unreachable_s3_is_503_and_changes_nothing(alice: httpx.AsyncClient) -> None:
    credential = await own_credential(alice, f"http://127.0.0.1:{free_port()}", "k", "s")
    resource_id = await create(alice, {"object": "x", "credential": credential})
    response = await act(alice, resource_id, "upload")
    assert response.status_code == 503, response.text
    assert "unreachable" in response.json()["message"]
    assert (await alice.get(f"/api/{resource_id}")).json()["state"] == "NEW"


async def test_refused_s3_keys_are_502(alice: httpx.AsyncClient, s3_endpoint: S3Endpoint) -> None:
    credential = await own_credential(alice, s3_endpoint.url, s3_endpoint.access_key, "wrong")
    resource_id = await create(alice, {"object": "x", "credential": credential})
    response = await act(alice, resource_id, "upload")
    assert response.status_code == 502, response.text
    assert "refused access" in response.json()["message"]


async def test_delete_with_unreachable_s3_removes_the_record_and_says_so(
    alice: httpx.AsyncClient,
) -> None:
    credential = await own_credential(alice, f"http://127.0.0.1:{free_port()}", "k", "s")
    resource_id = await create(alice, {"object": "x", "credential": credential})
    response = await alice.delete(f"/api/{resource_id}")
    assert response.status_code == 200, response.text
    assert "could not be deleted" in response.json()["message"]
    assert (await alice.get(f"/api/{resource_id}")).status_code == 404


async def test_delete_of_a_never_uploaded_object(alice: httpx.AsyncClient) -> None:
    resource_id = await create(alice, {"object": "x", "bucket": f"none-{uuid.uuid4().hex[:8]}"})
    response = await alice.delete(f"/api/{resource_id}")
    assert response.status_code == 200, response.text
    assert response.json()["message"] == f"{resource_id} deleted"
