"""The real nuvla-api client against the catalog served by uvicorn: compatibility, end to end."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from nuvla.api import Api
from nuvla.api.api import NuvlaError
from nuvla.api.resources.data import DataObjectS3

from servicekit.infra import S3Endpoint
from servicekit.infra.ports import free_port
from servicekit.testing import ServiceProcess

SERVICE = "infrastructure-service/s3-edge"


@pytest.fixture
def catalog(
    tmp_path: Path, sqlite_database_url: str, identity_jwks_path: Path
) -> Iterator[ServiceProcess]:
    port = free_port()
    env = {
        "EXTRACT_CATALOG_PORT": str(port),
        "EXTRACT_CATALOG_DATABASE_URL": sqlite_database_url,
        "EXTRACT_CATALOG_IDENTITY_JWKS": str(identity_jwks_path),
        "EXTRACT_HOME": str(tmp_path / "home"),
        "EXTRACT_CATALOG_NATS_URL": "",
    }
    process = ServiceProcess("services.catalog", tmp_path, env=env, port=port)
    process.start(timeout=60)
    yield process
    process.stop()


@pytest.fixture
def api(catalog: ServiceProcess, mint_token: Callable[..., str]) -> Api:
    client = Api(endpoint=catalog.url, insecure=True, persist_cookie=False)
    # The gateway's session API comes later: the identity token goes straight on the session.
    client.session.headers["Authorization"] = f"Bearer {mint_token('user/alice')}"
    return client


def test_nuvla_client_adds_searches_gets_edits_and_deletes(api: Api) -> None:
    assert "data-record" in api.cloud_entry_point.collections

    ids = []
    for name, size in (("a", 30), ("b", 10), ("c", 20)):
        response = api.add(
            "data-record",
            {
                "infrastructure-service": SERVICE,
                "name": name,
                "bytes": size,
                "description": f"record {name}",
            },
        )
        assert response.data["status"] == 201
        ids.append(response.data["resource-id"])

    found = api.search(
        "data-record", filter="bytes>10", orderby="bytes:desc", select=["name", "bytes"]
    )
    assert found.count == 2
    assert [r.data["name"] for r in found.resources] == ["a", "c"]
    assert all(set(r.data) == {"id", "resource-type", "name", "bytes"} for r in found.resources)

    window = api.search("data-record", orderby="bytes", first=2, last=3)
    assert window.count == 3
    assert [r.data["bytes"] for r in window.resources] == [20, 30]

    record = api.get(ids[0])
    assert record.id == ids[0]
    assert record.data["name"] == "a"
    assert set(record.operations) == {"edit", "delete"}

    edited = api.edit(ids[0], {"name": "renamed"}, select="description")
    assert edited.data["name"] == "renamed"
    assert "description" not in edited.data
    assert api.get(ids[0]).data["name"] == "renamed"

    deleted = api.delete(ids[1])
    assert deleted.data == {"status": 200, "message": f"{ids[1]} deleted", "resource-id": ids[1]}
    assert api.search("data-record").count == 2
    with pytest.raises(NuvlaError, match="not found"):
        api.get(ids[1])

    bulk = api.delete_bulk("data-record", filter="bytes>=20")
    assert bulk.data["deleted"] == 2
    assert api.search("data-record", last=0).count == 0


def test_nuvla_client_compressed_requests(
    catalog: ServiceProcess, mint_token: Callable[..., str]
) -> None:
    client = Api(endpoint=catalog.url, insecure=True, persist_cookie=False, compress=True)
    client.session.headers["Authorization"] = f"Bearer {mint_token('user/alice')}"
    record = {"infrastructure-service": SERVICE, "description": "compressible " * 50}
    resource_id = client.add("data-record", record).data["resource-id"]
    assert client.get(resource_id).data["description"] == record["description"]


def test_nuvla_client_search_with_aggregation(api: Api) -> None:
    for name, size in (("a", 10), ("b", 20), ("b", 30)):
        api.add("data-record", {"infrastructure-service": SERVICE, "name": name, "bytes": size})

    found = api.search("data-record", filter="bytes>10", aggregation="sum:bytes,terms:name", last=0)
    assert found.count == 2
    assert found.data["aggregations"]["sum:bytes"] == {"value": 50.0}
    assert found.data["aggregations"]["terms:name"]["buckets"] == [{"key": "b", "doc_count": 2}]
    with pytest.raises(NuvlaError, match="median:bytes"):
        api.search("data-record", aggregation="median:bytes")


def test_nuvla_client_error_carries_the_catalog_message(api: Api) -> None:
    with pytest.raises(NuvlaError, match="infrastructure-service"):
        api.add("data-record", {"name": "missing its service"})
    with pytest.raises(NuvlaError, match="Invalid CIMI filter"):
        api.search("data-record", filter="name=((")


@pytest.fixture
def catalog_with_s3(
    tmp_path: Path, sqlite_database_url: str, identity_jwks_path: Path, s3_endpoint: S3Endpoint
) -> Iterator[ServiceProcess]:
    port = free_port()
    env = {
        "EXTRACT_CATALOG_PORT": str(port),
        "EXTRACT_CATALOG_DATABASE_URL": sqlite_database_url,
        "EXTRACT_CATALOG_IDENTITY_JWKS": str(identity_jwks_path),
        "EXTRACT_HOME": str(tmp_path / "home"),
        "EXTRACT_CATALOG_NATS_URL": "",
        "EXTRACT_CATALOG_S3_ENDPOINT": s3_endpoint.url,
        "EXTRACT_CATALOG_S3_ACCESS_KEY": s3_endpoint.access_key,
        "EXTRACT_CATALOG_S3_SECRET_KEY": s3_endpoint.secret_key,
        "EXTRACT_CATALOG_S3_REGION": s3_endpoint.region,
    }
    process = ServiceProcess("services.catalog", tmp_path, env=env, port=port)
    process.start(timeout=60)
    yield process
    process.stop()


def test_nuvla_client_data_object_upload_ready_download(
    catalog_with_s3: ServiceProcess, mint_token: Callable[..., str]
) -> None:
    client = Api(endpoint=catalog_with_s3.url, insecure=True, persist_cookie=False)
    client.session.headers["Authorization"] = f"Bearer {mint_token('user/alice')}"
    credential = client.search("credential").resources[0].id
    content = b"\x00raw spectrum\xff" * 4096

    # The client's own helper: create from the generic template, upload, PUT, ready.
    helper = DataObjectS3(client)
    resource_id = helper.create(
        content, "extract-data", "spectra/raw.bin", credential, "application/octet-stream"
    )
    data_object = client.get(resource_id)
    assert data_object.data["state"] == "READY"
    assert data_object.data["bytes"] == len(content)
    assert set(data_object.operations) == {"edit", "delete", "download"}
    assert helper.get_content(resource_id) == content

    # The same steps by hand, as the Nuvla tutorial does them.
    added = client.add(
        "data-object",
        {"template": {"href": "data-object-template/generic", "object": "spectra/b.bin"}},
    )
    second = client.get(added.data["resource-id"])
    upload = client.operation(second, "upload")
    assert httpx.put(upload.data["uri"], content=content, timeout=30).status_code == 200
    with pytest.raises(NuvlaError, match="Invalid state 'UPLOADING' for 'download'"):
        client.operation(client.get(second.id), "download")
    ready = client.operation(client.get(second.id), "ready")
    assert ready.data["state"] == "READY"
    download = client.operation(client.get(second.id), "download")
    assert httpx.get(download.data["uri"], timeout=30).content == content

    client.delete(second.id)
    assert httpx.get(download.data["uri"], timeout=30).status_code == 404
