"""Tests for services/catalog/api.py (and resources.py behind it), on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import gzip
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from servicekit.security import ADMIN_CLAIM
from servicekit.testing import app_client
from services.catalog.app import create_app
from services.catalog.settings import CatalogSettings

RECORD = {"infrastructure-service": "infrastructure-service/s3-edge", "name": "spectrum"}


@pytest.fixture
async def app(database_url: str, identity_jwks_path: Path) -> AsyncIterator[Any]:
    settings = CatalogSettings(
        database_url=database_url, identity_jwks=str(identity_jwks_path), nats_url=""
    )
    yield create_app(settings)


@pytest.fixture
async def alice(app: Any, mint_token: Callable[..., str]) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {mint_token('user/alice')}"}
    async with app_client(app, headers=headers) as client:
        yield client


@pytest.fixture
def as_(alice: httpx.AsyncClient, mint_token: Callable[..., str]) -> Callable[..., dict[str, str]]:
    """Headers for another caller on the same (already started) app."""

    def headers(principal: str, *claims: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(principal, claims=claims)}"}

    return headers


async def add(client: httpx.AsyncClient, body: dict[str, Any], **kw: Any) -> str:
    response = await client.post("/api/data-record", json=body, **kw)
    assert response.status_code == 201, response.text
    return response.json()["resource-id"]


async def count(client: httpx.AsyncClient, collection: str = "data-record", **kw: Any) -> int:
    response = await client.get(f"/api/{collection}", params={"last": 0}, **kw)
    assert response.status_code == 200, response.text
    return response.json()["count"]


# --- create, read, edit, delete ---------------------------------------------------------------


async def test_cloud_entry_point_lists_collections(alice: httpx.AsyncClient) -> None:
    body = (await alice.get("/api/cloud-entry-point")).json()
    assert body["base-uri"].endswith("/api/")
    assert body["collections"]["data-record"] == {"href": "data-record"}
    assert "data-set" in body["collections"]
    assert "data-record-key" in body["collections"]


async def test_readiness_checks_the_database(alice: httpx.AsyncClient) -> None:
    response = await alice.get("/readyz")
    assert response.status_code == 200, response.text
    assert "database" in response.text


async def test_add_answers_201_with_location_and_nuvla_body(alice: httpx.AsyncClient) -> None:
    response = await alice.post("/api/data-record", json=RECORD)
    assert response.status_code == 201
    body = response.json()
    resource_id = body["resource-id"]
    assert resource_id.startswith("data-record/")
    assert body == {"status": 201, "message": f"{resource_id} created", "resource-id": resource_id}
    assert response.headers["location"] == resource_id


async def test_new_resource_gets_server_attributes_and_default_acl(
    alice: httpx.AsyncClient,
) -> None:
    resource_id = await add(alice, {**RECORD, "id": "data-record/mine", "created": "1999"})
    record = (await alice.get(f"/api/{resource_id}")).json()
    assert record["id"] == resource_id
    assert record["resource-type"] == "data-record"
    assert record["created-by"] == "user/alice"
    assert record["created"] == record["updated"] and record["created"].startswith("20")
    assert record["acl"] == {"owners": ["user/alice"]}
    assert record["name"] == "spectrum"
    assert {op["rel"] for op in record["operations"]} == {"edit", "delete"}


async def test_given_acl_is_normalised(alice: httpx.AsyncClient) -> None:
    acl = {"owners": ["user/alice"], "edit-data": ["group/science"]}
    resource_id = await add(alice, {**RECORD, "acl": acl})
    stored = (await alice.get(f"/api/{resource_id}")).json()["acl"]
    assert stored == {
        "owners": ["user/alice"],
        "edit-data": ["group/science"],
        "edit-meta": ["group/science"],
        "view-data": ["group/science"],
        "view-meta": ["group/science"],
    }


async def test_edit_merges_body(alice: httpx.AsyncClient) -> None:
    resource_id = await add(alice, {**RECORD, "bytes": 10})
    response = await alice.put(f"/api/{resource_id}", json={"bytes": 20, "extra": "x"})
    assert response.status_code == 200, response.text
    record = (await alice.get(f"/api/{resource_id}")).json()
    assert (record["bytes"], record["extra"], record["name"]) == (20, "x", "spectrum")
    assert record["updated-by"] == "user/alice"
    assert record["updated"] >= record["created"]


async def test_edit_with_select_removes_absent_attributes(alice: httpx.AsyncClient) -> None:
    resource_id = await add(alice, {**RECORD, "description": "old", "extra": 1})
    response = await alice.put(
        f"/api/{resource_id}", params={"select": "description,extra"}, json={"extra": 2}
    )
    assert response.status_code == 200, response.text
    record = (await alice.get(f"/api/{resource_id}")).json()
    assert "description" not in record
    assert record["extra"] == 2


async def test_edit_cannot_change_server_managed_keys(alice: httpx.AsyncClient) -> None:
    resource_id = await add(alice, RECORD)
    before = (await alice.get(f"/api/{resource_id}")).json()
    changed = {"id": "data-record/other", "created": "2000-01-01T00:00:00Z", "resource-type": "x"}
    assert (await alice.put(f"/api/{resource_id}", json=changed)).status_code == 200
    after = (await alice.get(f"/api/{resource_id}")).json()
    for key in ("id", "created", "resource-type", "created-by"):
        assert after[key] == before[key]
    assert (
        await alice.get("/api/data-record/" + "0" * 8 + "-0000-0000-0000-" + "0" * 12)
    ).status_code == 404


async def test_delete_removes_the_resource(alice: httpx.AsyncClient) -> None:
    resource_id = await add(alice, RECORD)
    response = await alice.delete(f"/api/{resource_id}")
    assert response.json() == {
        "status": 200,
        "message": f"{resource_id} deleted",
        "resource-id": resource_id,
    }
    missing = await alice.get(f"/api/{resource_id}")
    assert missing.status_code == 404
    assert missing.json()["resource-id"] == resource_id
    assert (await alice.delete(f"/api/{resource_id}")).status_code == 404


async def test_get_with_select_restricts_keys(alice: httpx.AsyncClient) -> None:
    resource_id = await add(alice, {**RECORD, "bytes": 3})
    record = (await alice.get(f"/api/{resource_id}", params={"select": "bytes"})).json()
    assert set(record) == {"id", "resource-type", "bytes"}


async def test_data_set_with_valid_filters_is_stored(alice: httpx.AsyncClient) -> None:
    body = {"name": "set", "data-record-filter": 'content-type="text/csv"'}
    response = await alice.post("/api/data-set", json=body)
    assert response.status_code == 201, response.text
    stored = (await alice.get(f"/api/{response.json()['resource-id']}")).json()
    assert stored["data-record-filter"] == 'content-type="text/csv"'


# --- search ------------------------------------------------------------------------------------


async def _three(alice: httpx.AsyncClient) -> list[str]:
    return [
        await add(alice, {**RECORD, "name": name, "bytes": size})
        for name, size in (("a", 30), ("b", 10), ("c", 20))
    ]


async def test_search_filters_and_orders(alice: httpx.AsyncClient) -> None:
    await _three(alice)
    body = (
        await alice.get("/api/data-record", params={"filter": "bytes>10", "orderby": "bytes:desc"})
    ).json()
    assert body["count"] == 2
    assert [r["name"] for r in body["resources"]] == ["a", "c"]
    assert body["id"] == "data-record"
    assert body["operations"] == [{"rel": "add", "href": "data-record"}]


async def test_repeated_filters_are_anded(alice: httpx.AsyncClient) -> None:
    await _three(alice)
    params = [("filter", "bytes>10"), ("filter", 'name="c"')]
    body = (await alice.get("/api/data-record", params=params)).json()
    assert [r["name"] for r in body["resources"]] == ["c"]


async def test_search_pages_with_first_and_last(alice: httpx.AsyncClient) -> None:
    await _three(alice)
    params = {"orderby": "bytes", "first": 2, "last": 3}
    body = (await alice.get("/api/data-record", params=params)).json()
    assert body["count"] == 3
    assert [r["bytes"] for r in body["resources"]] == [20, 30]


async def test_search_pages_with_cursor(alice: httpx.AsyncClient) -> None:
    await _three(alice)
    first = (await alice.get("/api/data-record", params={"orderby": "bytes", "last": 2})).json()
    assert [r["bytes"] for r in first["resources"]] == [10, 20]
    params = {"orderby": "bytes", "last": 2, "after": first["next"]}
    rest = (await alice.get("/api/data-record", params=params)).json()
    assert [r["bytes"] for r in rest["resources"]] == [30]
    assert "next" not in rest


async def test_search_select_keeps_id(alice: httpx.AsyncClient) -> None:
    await _three(alice)
    body = (await alice.get("/api/data-record", params={"select": "name"})).json()
    assert all(set(r) == {"id", "resource-type", "name"} for r in body["resources"])


async def test_put_search_takes_form_parameters(alice: httpx.AsyncClient) -> None:
    await _three(alice)
    form = {"filter": "bytes<30", "orderby": "bytes:asc", "select": "bytes"}
    response = await alice.put("/api/data-record", data=form)
    body = response.json()
    assert body["count"] == 2
    assert [r["bytes"] for r in body["resources"]] == [10, 20]


# --- access control ----------------------------------------------------------------------------


async def test_other_users_cannot_see_count_edit_or_delete(
    alice: httpx.AsyncClient, as_: Callable[..., dict[str, str]]
) -> None:
    resource_id = await add(alice, RECORD)
    bob = as_("user/bob")
    assert (await alice.get(f"/api/{resource_id}", headers=bob)).status_code == 403
    assert await count(alice, headers=bob) == 0
    edited = await alice.put(f"/api/{resource_id}", json={"name": "bob's"}, headers=bob)
    assert edited.status_code == 403
    assert (await alice.delete(f"/api/{resource_id}", headers=bob)).status_code == 403
    record = (await alice.get(f"/api/{resource_id}")).json()
    assert record["name"] == "spectrum"


async def test_group_share_is_visible_to_member(
    alice: httpx.AsyncClient, as_: Callable[..., dict[str, str]]
) -> None:
    acl = {"owners": ["user/alice"], "view-data": ["group/science"]}
    resource_id = await add(alice, {**RECORD, "acl": acl})
    member = as_("user/bob", "group/science")
    record = (await alice.get(f"/api/{resource_id}", headers=member)).json()
    assert record["name"] == "spectrum"
    assert "acl" not in record  # view-data shows data, not the acl
    assert record["operations"] == []
    assert await count(alice, headers=member) == 1
    assert await count(alice, headers=as_("user/bob")) == 0


async def test_admin_sees_everything(
    alice: httpx.AsyncClient, as_: Callable[..., dict[str, str]]
) -> None:
    await _three(alice)
    admin = as_("user/root", ADMIN_CLAIM)
    assert await count(alice, headers=admin) == 3


async def test_view_meta_shows_only_metadata(
    alice: httpx.AsyncClient, as_: Callable[..., dict[str, str]]
) -> None:
    acl = {"owners": ["user/alice"], "view-meta": ["user/bob"]}
    resource_id = await add(alice, {**RECORD, "bytes": 5, "acl": acl})
    record = (await alice.get(f"/api/{resource_id}", headers=as_("user/bob"))).json()
    assert record["name"] == "spectrum"
    assert "bytes" not in record and "infrastructure-service" not in record
    assert "acl" not in record


async def test_edit_meta_cannot_change_data(
    alice: httpx.AsyncClient, as_: Callable[..., dict[str, str]]
) -> None:
    acl = {"owners": ["user/alice"], "edit-meta": ["user/bob"]}
    resource_id = await add(alice, {**RECORD, "bytes": 5, "acl": acl})
    bob = as_("user/bob")
    assert (
        await alice.put(f"/api/{resource_id}", json={"bytes": 6}, headers=bob)
    ).status_code == 403
    renamed = await alice.put(f"/api/{resource_id}", json={"name": "new"}, headers=bob)
    assert renamed.status_code == 200, renamed.text
    assert (await alice.get(f"/api/{resource_id}")).json()["bytes"] == 5


async def test_bulk_delete_needs_header_and_filter(alice: httpx.AsyncClient) -> None:
    await _three(alice)
    no_header = await alice.request("DELETE", "/api/data-record", params={"filter": "bytes>0"})
    assert no_header.status_code == 400
    no_filter = await alice.request("DELETE", "/api/data-record", headers={"bulk": "yes"})
    assert no_filter.status_code == 400
    assert await count(alice) == 3
    deleted = await alice.request(
        "DELETE",
        "/api/data-record",
        headers={"bulk": "yes", "content-type": "application/x-www-form-urlencoded"},
        content=b"filter=bytes%3E10",
    )
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["deleted"] == 2
    assert await count(alice) == 1


async def test_bulk_delete_spares_resources_the_caller_cannot_delete(
    alice: httpx.AsyncClient, as_: Callable[..., dict[str, str]]
) -> None:
    acl = {"owners": ["user/alice"], "view-data": ["user/bob"]}
    await add(alice, {**RECORD, "acl": acl})
    response = await alice.delete(
        "/api/data-record",
        params={"filter": "bytes=null"},
        headers={**as_("user/bob"), "bulk": "yes"},
    )
    assert response.json()["deleted"] == 0
    assert await count(alice) == 1


# --- key prefixes ------------------------------------------------------------------------------


async def test_namespaced_keys_need_a_defined_prefix(
    alice: httpx.AsyncClient, as_: Callable[..., dict[str, str]]
) -> None:
    refused = await alice.post("/api/data-record", json={**RECORD, "schema-org:name": "x"})
    assert refused.status_code == 406
    assert "schema-org" in refused.json()["message"]
    prefix = {"prefix": "schema-org", "uri": "https://schema.org/"}
    assert (await alice.post("/api/data-record-key-prefix", json=prefix)).status_code == 403
    admin = as_("user/root", ADMIN_CLAIM)
    created = await alice.post("/api/data-record-key-prefix", json=prefix, headers=admin)
    assert created.status_code == 201, created.text
    again = await alice.post("/api/data-record-key-prefix", json=prefix, headers=admin)
    assert again.status_code == 409
    await add(alice, {**RECORD, "schema-org:name": "x", "resource:object": "bucket/key"})


async def test_data_record_keys_describe_a_key_of_a_prefix(alice: httpx.AsyncClient) -> None:
    key = {
        "name": "Frequency",
        "description": "centre frequency of the observation, in MHz",
        "prefix": "radio",
        "key": "frequency",
        "subtype": "number",
    }
    created = await alice.post("/api/data-record-key", json=key)
    assert created.status_code == 201, created.text
    found = (await alice.get("/api/data-record-key", params={"filter": "prefix='radio'"})).json()
    assert [r["key"] for r in found["resources"]] == ["frequency"]
    for bad, field in (
        ({k: v for k, v in key.items() if k != "description"}, "description"),
        ({**key, "prefix": "Radio Astronomy"}, "prefix"),
        ({**key, "key": ""}, "key"),
    ):
        refused = await alice.post("/api/data-record-key", json=bad)
        assert refused.status_code == 400, bad
        assert field in refused.json()["message"]
    assert await count(alice, "data-record-key") == 1


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "no service"}, "infrastructure-service"),
        ({**RECORD, "bytes": -1}, "bytes"),
        ({**RECORD, "bytes": "10"}, "bytes"),
        ({**RECORD, "timestamp": "yesterday"}, "timestamp"),
        ({**RECORD, "md5sum": "xyz"}, "md5sum"),
        ({**RECORD, "location": [1]}, "location"),
        ({**RECORD, "location": [200, 0]}, "location"),
        ({**RECORD, "geometry": {"type": "Point"}}, "geometry"),
        ({**RECORD, "geometry": {"type": "Pointy", "coordinates": [1, 2]}}, "geometry"),
        ({**RECORD, "geometry": {"type": "Point", "coordinates": [1, 2], "crs": 1}}, "geometry"),
        (
            {**RECORD, "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0]]]}},
            "geometry",
        ),
        (
            {
                **RECORD,
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[0, 0], [2, 2], [2, 0], [0, 2], [0, 0]]],
                },
            },
            "geometry",
        ),
        ({**RECORD, "content-type": 3}, "content-type"),
        ({**RECORD, "resource:object": ["k"]}, "resource:object"),
        ({**RECORD, "acl": {"owners": []}}, "acl.owners"),
    ],
)
async def test_mistyped_record_is_refused_naming_the_field(
    alice: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await alice.post("/api/data-record", json=body)
    assert response.status_code == 400
    error = response.json()
    assert error["status"] == 400
    assert error["message"].startswith(field)
    assert await count(alice) == 0


async def test_bad_data_set_filter_is_refused(alice: httpx.AsyncClient) -> None:
    response = await alice.post("/api/data-set", json={"data-record-filter": "a=(("})
    assert response.status_code == 400
    assert "Invalid CIMI filter." in response.json()["message"]
    assert await count(alice, "data-set") == 0


async def test_bad_filter_on_edit_changes_nothing(alice: httpx.AsyncClient) -> None:
    created = await alice.post("/api/data-set", json={"module-filter": "a=1"})
    resource_id = created.json()["resource-id"]
    response = await alice.put(f"/api/{resource_id}", json={"module-filter": "a="})
    assert response.status_code == 400
    assert (await alice.get(f"/api/{resource_id}")).json()["module-filter"] == "a=1"


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe"],
    ids=["malformed", "array", "string", "not-utf8"],
)
async def test_body_that_is_not_a_json_object_is_refused(
    alice: httpx.AsyncClient, content: bytes
) -> None:
    headers = {"content-type": "application/json"}
    response = await alice.post("/api/data-record", content=content, headers=headers)
    assert response.status_code == 400
    assert set(response.json()) >= {"status", "message"}
    assert await count(alice) == 0


async def test_oversized_body_is_refused(alice: httpx.AsyncClient) -> None:
    big = {**RECORD, "blob": "x" * (1024 * 1024)}
    response = await alice.post("/api/data-record", json=big)
    assert response.status_code == 413
    assert response.json()["status"] == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: refused while reading
        yield b'{"infrastructure-service": "s", "blob": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    streamed = await alice.post("/api/data-record", content=chunks())
    assert streamed.status_code == 413
    assert await count(alice) == 0


async def test_an_indexed_value_too_long_for_its_index_is_a_400(
    alice: httpx.AsyncClient, database_url: str
) -> None:
    # Random text, which PostgreSQL cannot compress below its ~2.7 kB index-row limit; SQLite
    # has no such limit and stores it.
    refused = database_url.startswith("postgresql")
    long_name = base64.b64encode(os.urandom(4000)).decode()
    response = await alice.post("/api/data-record", json={**RECORD, "name": long_name})
    assert response.status_code == (400 if refused else 201), response.text
    if refused:
        assert "too long for the catalog's indexes" in response.json()["message"]
        assert await count(alice) == 0
    edited = await add(alice, RECORD)
    again = await alice.put(f"/api/{edited}", json={"name": long_name})
    assert again.status_code == (400 if refused else 200), again.text


async def test_gzip_body_is_inflated(alice: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    body = gzip.compress(json.dumps(RECORD).encode())
    response = await alice.post("/api/data-record", content=body, headers=headers)
    assert response.status_code == 201, response.text
    bomb = gzip.compress(json.dumps({**RECORD, "blob": "x" * (2 * 1024 * 1024)}).encode())
    assert len(bomb) < 1024 * 1024
    response = await alice.post("/api/data-record", content=bomb, headers=headers)
    assert response.status_code == 413
    broken = await alice.post("/api/data-record", content=body[:-8], headers=headers)
    assert broken.status_code == 400
    assert await count(alice) == 1


async def test_unknown_collection_is_404(alice: httpx.AsyncClient) -> None:
    assert (await alice.get("/api/no-such-thing")).status_code == 404
    assert (await alice.post("/api/no-such-thing", json={})).status_code == 404


async def test_invalid_uuid_is_400(alice: httpx.AsyncClient) -> None:
    response = await alice.get("/api/data-record/not-a-uuid")
    assert response.status_code == 400
    assert response.json()["resource-id"] == "data-record/not-a-uuid"


@pytest.mark.parametrize(
    "params",
    [
        {"filter": "bytes>>"},
        {"first": "x"},
        {"first": "0"},
        {"last": "-1"},
        {"orderby": "a:b:c"},
        {"after": "!"},
        {"aggregation": "median:bytes"},
        {"aggregation": "terms:"},
    ],
)
async def test_bad_search_parameters_are_400(
    alice: httpx.AsyncClient, params: dict[str, str]
) -> None:
    response = await alice.get("/api/data-record", params=params)
    assert response.status_code == 400
    assert response.json()["status"] == 400


async def test_bad_aggregation_is_400_naming_the_spec(alice: httpx.AsyncClient) -> None:
    response = await alice.get("/api/data-record", params={"aggregation": "median:bytes"})
    assert response.status_code == 400
    assert "median:bytes" in response.json()["message"]


async def test_search_answers_aggregations_over_its_filter(alice: httpx.AsyncClient) -> None:
    for name, size in (("a", 10), ("b", 20), ("b", 30), ("c", 40)):
        await add(alice, {**RECORD, "name": name, "bytes": size})
    params = [
        ("filter", "bytes<40"),
        ("aggregation", "sum:bytes,max:bytes"),
        ("aggregation", "terms:name"),
        ("last", "0"),
    ]
    response = await alice.get("/api/data-record", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == 3
    aggregations = body["aggregations"]
    assert aggregations["sum:bytes"] == {"value": 60.0}
    assert aggregations["max:bytes"] == {"value": 30.0}
    assert aggregations["terms:name"]["buckets"] == [
        {"key": "b", "doc_count": 2},
        {"key": "a", "doc_count": 1},
    ]


async def test_put_search_answers_aggregations_from_the_form(alice: httpx.AsyncClient) -> None:
    await add(alice, {**RECORD, "bytes": 5})
    await add(alice, {**RECORD, "bytes": 7})
    response = await alice.put(
        "/api/data-record", data={"aggregation": "stats:bytes", "filter": "bytes>0"}
    )
    assert response.status_code == 200, response.text
    stats = response.json()["aggregations"]["stats:bytes"]
    assert stats == {"count": 2, "min": 5.0, "max": 7.0, "avg": 6.0, "sum": 12.0}


async def test_search_without_aggregation_has_no_aggregations(alice: httpx.AsyncClient) -> None:
    assert "aggregations" not in (await alice.get("/api/data-record")).json()


async def test_aggregations_exclude_what_the_caller_may_not_view(
    alice: httpx.AsyncClient, as_: Callable[..., dict[str, str]]
) -> None:
    await add(alice, {**RECORD, "bytes": 100})  # private to alice
    shared = {"owners": ["user/alice"], "view-data": ["user/bob"]}
    await add(alice, {**RECORD, "bytes": 1, "acl": shared})
    params = {"aggregation": "sum:bytes,value_count:bytes"}
    bob = (await alice.get("/api/data-record", params=params, headers=as_("user/bob"))).json()
    assert bob["aggregations"] == {"sum:bytes": {"value": 1.0}, "value_count:bytes": {"value": 1}}
    mine = (await alice.get("/api/data-record", params=params)).json()
    assert mine["aggregations"]["sum:bytes"] == {"value": 101.0}


PATCH = {"content-type": "application/json-patch+json"}


async def test_json_patch_edits_the_resource(alice: httpx.AsyncClient) -> None:
    resource_id = await add(alice, {**RECORD, "bytes": 1, "tags": ["a"], "extra": "x"})
    operations = [
        {"op": "test", "path": "/bytes", "value": 1},
        {"op": "replace", "path": "/bytes", "value": 2},
        {"op": "add", "path": "/tags/-", "value": "b"},
        {"op": "remove", "path": "/extra"},
        {"op": "copy", "from": "/name", "path": "/description"},
    ]
    response = await alice.put(f"/api/{resource_id}", json=operations, headers=PATCH)
    assert response.status_code == 200, response.text
    record = (await alice.get(f"/api/{resource_id}")).json()
    assert (record["bytes"], record["tags"], record["description"]) == (2, ["a", "b"], "spectrum")
    assert "extra" not in record


@pytest.mark.parametrize(
    "operations",
    [
        [{"op": "replace", "path": "/name", "value": "new"}, {"op": "test", "path": "/bytes"}],
        [{"op": "remove", "path": "/missing"}],
        [{"op": "jump", "path": "/name"}],
        [{"op": "replace", "path": "/bytes", "value": "many"}],
        {"op": "remove", "path": "/name"},
    ],
    ids=["failed-test", "missing-path", "unknown-op", "mistyped-result", "not-an-array"],
)
async def test_bad_json_patch_changes_nothing(alice: httpx.AsyncClient, operations: Any) -> None:
    resource_id = await add(alice, {**RECORD, "bytes": 1})
    response = await alice.put(f"/api/{resource_id}", json=operations, headers=PATCH)
    assert response.status_code == 400
    record = (await alice.get(f"/api/{resource_id}")).json()
    assert (record["name"], record["bytes"]) == ("spectrum", 1)


# --- authentication ----------------------------------------------------------------------------


async def test_missing_token_is_401(alice: httpx.AsyncClient) -> None:
    response = await alice.get("/api/data-record", headers={"Authorization": ""})
    assert response.status_code == 401
    alice.headers.pop("Authorization")
    response = await alice.get("/api/data-record")
    assert response.status_code == 401
    assert response.json()["status"] == 401


async def test_expired_token_is_401(alice: httpx.AsyncClient, identity_key: Any) -> None:
    from servicekit.security import issue_identity_token

    an_hour_ago = time.time() - 3600
    expired = issue_identity_token(identity_key, "user/alice", (), ttl=60, now=an_hour_ago)
    response = await alice.get("/api/data-record", headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401


async def test_token_signed_by_a_foreign_key_is_401(alice: httpx.AsyncClient) -> None:
    from servicekit.security import SigningKey, issue_identity_token

    forged = issue_identity_token(SigningKey.generate(), "user/alice", (), ttl=300)
    response = await alice.post(
        "/api/data-record", json=RECORD, headers={"Authorization": f"Bearer {forged}"}
    )
    assert response.status_code == 401
    assert await count(alice) == 0
