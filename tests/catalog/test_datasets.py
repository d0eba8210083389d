"""`GET /api/data-set/<uuid>/members`: a data-set's filters as searches for the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from servicekit.testing import app_client
from services.catalog.app import create_app
from services.catalog.settings import CatalogSettings

SERVICE = "infrastructure-service/s3-edge"


@pytest.fixture
async def alice(
    database_url: str, identity_jwks_path: Path, mint_token: Callable[..., str]
) -> AsyncIterator[httpx.AsyncClient]:
    settings = CatalogSettings(
        database_url=database_url, identity_jwks=str(identity_jwks_path), nats_url=""
    )
    headers = {"Authorization": f"Bearer {mint_token('user/alice')}"}
    async with app_client(create_app(settings), headers=headers) as client:
        yield client


@pytest.fixture
def bob(mint_token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token('user/bob')}"}


async def _add(client: httpx.AsyncClient, collection: str, body: dict[str, Any], **kw: Any) -> str:
    response = await client.post(f"/api/{collection}", json=body, **kw)
    assert response.status_code == 201, response.text
    return response.json()["resource-id"]


@pytest.fixture
async def spectra(alice: httpx.AsyncClient, bob: dict[str, str]) -> str:
    """A data-set of alice's 'spectrum' records; bob owns one matching record alice can't see."""
    for day, size in ((1, 10), (2, 20), (3, 30)):
        await _add(
            alice,
            "data-record",
            {
                "infrastructure-service": SERVICE,
                "tags": ["spectrum"],
                "bytes": size,
                "timestamp": f"2026-03-0{day}T12:00:00Z",
            },
        )
    await _add(alice, "data-record", {"infrastructure-service": SERVICE, "tags": ["other"]})
    await _add(
        alice,
        "data-record",
        {"infrastructure-service": SERVICE, "tags": ["spectrum"], "bytes": 1000},
        headers=bob,
    )
    return await _add(
        alice, "data-set", {"name": "spectra", "data-record-filter": "tags='spectrum'"}
    )


async def test_members_are_what_the_caller_may_see_with_counts_and_bytes(
    alice: httpx.AsyncClient, spectra: str
) -> None:
    response = await alice.get(f"/api/{spectra}/members")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["count"], body["bytes"]) == (3, 60)
    records = body["data-records"]
    assert (records["count"], records["bytes"]) == (3, 60)
    assert sorted(r["bytes"] for r in records["resources"]) == [10, 20, 30]
    assert "data-objects" not in body  # the data-set has no data-object-filter


async def test_members_take_filters_orderby_paging_aggregations_and_a_window(
    alice: httpx.AsyncClient, spectra: str
) -> None:
    url = f"/api/{spectra}/members"
    narrowed = (await alice.get(url, params={"filter": "bytes>15"})).json()
    assert narrowed["count"] == 2 and narrowed["bytes"] == 50

    first = (await alice.get(url, params={"orderby": "bytes:desc", "last": 1})).json()
    page = first["data-records"]
    assert [r["bytes"] for r in page["resources"]] == [30]
    following = await alice.get(
        url, params={"orderby": "bytes:desc", "last": 1, "after": page["next"]}
    )
    assert [r["bytes"] for r in following.json()["data-records"]["resources"]] == [20]

    stats = (await alice.get(url, params={"aggregation": "max:bytes"})).json()
    assert stats["data-records"]["aggregations"]["max:bytes"]["value"] == 30

    window = {"from": "2026-03-02T00:00:00Z", "to": "2026-03-03T12:00:00Z"}
    inside = (await alice.get(url, params=window)).json()
    assert [r["bytes"] for r in inside["data-records"]["resources"]] == [20]

    objects = (await alice.get(url, params={"collection": "data-object"})).json()
    assert objects["count"] == 0 and "data-records" not in objects


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"collection": "module"}, "collection: expected"),
        ({"from": "yesterday"}, "from: expected an ISO date"),
        ({"from": "2026-03-02T00:00:00"}, "time zone"),
        ({"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "window is empty"),
        ({"filter": "bytes>"}, "Invalid CIMI filter"),
        ({"aggregation": "median:bytes"}, "median"),
    ],
)
async def test_bad_member_queries_are_400(
    alice: httpx.AsyncClient, spectra: str, params: dict[str, str], message: str
) -> None:
    response = await alice.get(f"/api/{spectra}/members", params=params)
    assert response.status_code == 400
    assert message in response.json()["message"]


async def test_members_need_view_data_on_the_data_set(
    alice: httpx.AsyncClient, spectra: str, bob: dict[str, str]
) -> None:
    assert (await alice.get(f"/api/{spectra}/members", headers=bob)).status_code == 403
    await alice.put(
        f"/api/{spectra}", json={"acl": {"owners": ["user/alice"], "view-meta": ["user/bob"]}}
    )
    assert (await alice.get(f"/api/{spectra}/members", headers=bob)).status_code == 403
    await alice.put(
        f"/api/{spectra}", json={"acl": {"owners": ["user/alice"], "view-data": ["user/bob"]}}
    )
    seen_by_bob = (await alice.get(f"/api/{spectra}/members", headers=bob)).json()
    assert (seen_by_bob["count"], seen_by_bob["bytes"]) == (1, 1000)
    missing = "data-set/00000000-0000-4000-8000-000000000000"
    assert (await alice.get(f"/api/{missing}/members")).status_code == 404
    assert (await alice.get("/api/data-set/nope/members")).status_code == 400
