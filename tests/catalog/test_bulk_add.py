"""Bulk add (`POST /api/<collection>` with `bulk: yes` and a JSON array): all or nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from servicekit.testing import app_client
from services.catalog.app import create_app
from services.catalog.settings import CatalogSettings

BULK = {"bulk": "yes"}
SERVICE = "infrastructure-service/s3-edge"


def records(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"infrastructure-service": SERVICE, "name": f"r{i}", **extra} for i in range(n)]


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


async def count(client: httpx.AsyncClient) -> int:
    response = await client.get("/api/data-record", params={"last": 0})
    assert response.status_code == 200, response.text
    return response.json()["count"]


async def test_bulk_add_creates_every_resource_in_order(alice: httpx.AsyncClient) -> None:
    response = await alice.post("/api/data-record", json=records(3), headers=BULK)
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["status"], body["count"]) == (201, 3)
    ids = [item["resource-id"] for item in body["resources"]]
    assert len(set(ids)) == 3 and all(i.startswith("data-record/") for i in ids)
    for n, resource_id in enumerate(ids):
        stored = (await alice.get(f"/api/{resource_id}")).json()
        assert (stored["name"], stored["created-by"]) == (f"r{n}", "user/alice")
        assert "user/alice" in stored["acl"]["owners"]
    found = await alice.get("/api/data-record", params={"filter": "name=='r1'"})
    assert [r["id"] for r in found.json()["resources"]] == [ids[1]]


async def test_one_invalid_resource_stores_nothing_and_is_named(alice: httpx.AsyncClient) -> None:
    bodies = records(3)
    del bodies[2]["infrastructure-service"]
    response = await alice.post("/api/data-record", json=bodies, headers=BULK)
    assert response.status_code == 400, response.text
    assert "resource 2" in response.json()["message"]
    assert "infrastructure-service" in response.json()["message"]
    assert await count(alice) == 0


@pytest.mark.parametrize(
    "body",
    [[], {"name": "x"}, [{"infrastructure-service": SERVICE}, "not an object"]],
)
async def test_bulk_add_needs_a_non_empty_array_of_objects(
    alice: httpx.AsyncClient, body: Any
) -> None:
    response = await alice.post("/api/data-record", json=body, headers=BULK)
    assert response.status_code == 400, response.text
    assert await count(alice) == 0


async def test_without_the_header_an_array_is_no_resource(alice: httpx.AsyncClient) -> None:
    response = await alice.post("/api/data-record", json=records(2))
    assert response.status_code == 400, response.text
    assert await count(alice) == 0


async def test_anonymous_callers_may_not_bulk_add(
    database_url: str, identity_jwks_path: Path
) -> None:
    settings = CatalogSettings(
        database_url=database_url, identity_jwks=str(identity_jwks_path), nats_url=""
    )
    async with app_client(create_app(settings)) as anonymous:
        response = await anonymous.post("/api/data-record", json=records(1), headers=BULK)
    assert response.status_code in (401, 403), response.text
