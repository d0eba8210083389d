"""The real nuvla-api client against the catalog served by uvicorn: compatibility, end to end."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from nuvla.api import Api
from nuvla.api.api import NuvlaError

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
