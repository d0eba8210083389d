"""Bulk add (`POST /api/<collection>` with `bulk: yes` and a JSON array): all or nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from servicekit.cloudevents import CloudEvent
from servicekit.db import create_engine
from servicekit.outbox import outbox_events
from servicekit.security import ADMIN_CLAIM
from servicekit.testing import app_client
from services.catalog.app import create_app
from services.catalog.settings import CatalogSettings

BULK = {"bulk": "yes"}
SERVICE = "infrastructure-service/s3-edge"
BOB_MAY_VIEW = {"owners": ["user/alice"], "view-meta": ["user/bob"]}


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


async def outbox(database_url: str) -> list[tuple[str, CloudEvent]]:
    """The events written so far, in outbox order."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                sa.select(outbox_events.c.subject, outbox_events.c.payload).order_by(
                    outbox_events.c.seq
                )
            )
            return [(subject, CloudEvent.from_json(payload)) for subject, payload in rows.all()]
    finally:
        await engine.dispose()


def said(events: list[tuple[str, CloudEvent]], ids: list[str]) -> list[Any]:
    """What each event says, its resources' ids as their position in `ids` and without the
    timestamps of the write, so two runs of the same bodies compare equal."""

    def plain(value: Any) -> Any:
        if isinstance(value, str):
            return f"#{ids.index(value)}" if value in ids else value
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items() if k not in ("created", "updated")}
        if isinstance(value, list):
            return [plain(item) for item in value]
        return value

    return [(subject, plain(event.subject), plain(event.data)) for subject, event in events]


async def add(client: httpx.AsyncClient, collection: str, body: dict[str, Any], **kw: Any) -> str:
    response = await client.post(f"/api/{collection}", json=body, **kw)
    assert response.status_code == 201, response.text
    return response.json()["resource-id"]


def bearer(mint_token: Callable[..., str], principal: str, *claims: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(principal, claims)}"}


async def test_a_bulk_announces_what_as_many_single_adds_do(
    alice: httpx.AsyncClient, database_url: str, mint_token: Callable[..., str]
) -> None:
    bob = bearer(mint_token, "user/bob")
    floods = await add(
        alice, "data-set", {"data-record-filter": "tags='flood'", "acl": BOB_MAY_VIEW}
    )
    bobs = await add(alice, "subscription", {"data-set": floods}, headers=bob)
    await add(alice, "subscription", {"collection": "data-record", "filter": "bytes>100"})
    bodies = [
        {"infrastructure-service": SERVICE, "tags": ["flood"], "acl": BOB_MAY_VIEW},
        {"infrastructure-service": SERVICE, "tags": ["flood"], "bytes": 500},
        {"infrastructure-service": SERVICE, "tags": ["fire"], "bytes": 5},
        {"infrastructure-service": SERVICE, "name": "big", "bytes": 5000},
    ]
    before = len(await outbox(database_url))
    singles = [await add(alice, "data-record", body) for body in bodies]
    between = len(await outbox(database_url))
    response = await alice.post("/api/data-record", json=bodies, headers=BULK)
    assert response.status_code == 201, response.text
    bulk = [item["resource-id"] for item in response.json()["resources"]]
    events = await outbox(database_url)
    one_by_one, together = said(events[before:between], singles), said(events[between:], bulk)
    assert together == one_by_one
    subjects = [subject for subject, _, _ in together]
    assert subjects.count("catalog.data-record.created") == 4
    assert subjects.count("catalog.data-set.changed") == 2  # the floods
    assert len([s for s in subjects if s.startswith("catalog.subscription.")]) == 3
    # bob hears of the flood he may see, not of the one he may not
    to_bob = f"catalog.subscription.{bobs.partition('/')[2]}"
    assert [d["resource-id"] for s, _, d in together if s == to_bob] == ["#0"]


async def test_a_bulk_with_one_invalid_record_stores_and_announces_nothing(
    alice: httpx.AsyncClient, database_url: str
) -> None:
    await add(alice, "data-set", {"data-record-filter": "name^='r'"})
    await add(alice, "subscription", {"collection": "data-record"})
    before = await outbox(database_url)
    bodies = records(4)
    bodies[3]["bytes"] = "many"
    response = await alice.post("/api/data-record", json=bodies, headers=BULK)
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith("resource 3: bytes")
    assert await count(alice) == 0
    assert await outbox(database_url) == before


async def test_bulk_records_need_their_namespace_prefixes_defined(
    alice: httpx.AsyncClient, mint_token: Callable[..., str]
) -> None:
    admin = bearer(mint_token, "user/root", ADMIN_CLAIM)
    prefix = {"prefix": "schema-org", "uri": "https://schema.org/"}
    await add(alice, "data-record-key-prefix", prefix, headers=admin)
    bodies = records(3, **{"schema-org:name": "x"})
    bodies[2]["dcat:theme"] = "floods"
    refused = await alice.post("/api/data-record", json=bodies, headers=BULK)
    assert refused.status_code == 400, refused.text
    assert refused.json()["message"].startswith("resource 2: ")
    assert "dcat" in refused.json()["message"]
    del bodies[2]["dcat:theme"]
    created = await alice.post("/api/data-record", json=bodies, headers=BULK)
    assert created.status_code == 201, created.text
    assert await count(alice) == 3


async def test_a_bulk_of_data_sets_matches_later_records(alice: httpx.AsyncClient) -> None:
    bodies = [{"data-record-filter": f"name='r{n}'"} for n in range(2)]
    response = await alice.post("/api/data-set", json=bodies, headers=BULK)
    assert response.status_code == 201, response.text
    data_set = response.json()["resources"][1]["resource-id"]
    await alice.post("/api/data-record", json=records(3), headers=BULK)
    members = (await alice.get(f"/api/{data_set}/members")).json()
    assert [r["name"] for r in members["data-records"]["resources"]] == ["r1"]


async def test_a_bulk_of_key_prefixes_checks_each_against_those_before_it(
    alice: httpx.AsyncClient, mint_token: Callable[..., str]
) -> None:
    admin = bearer(mint_token, "user/root", ADMIN_CLAIM)
    prefix = {"prefix": "schema-org", "uri": "https://schema.org/"}
    response = await alice.post(
        "/api/data-record-key-prefix", json=[prefix, {**prefix, "uri": "x"}], headers=BULK | admin
    )
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith("resource 1: ")
    assert await count_of(alice, "data-record-key-prefix", admin) == 0


async def count_of(client: httpx.AsyncClient, collection: str, headers: dict[str, str]) -> int:
    response = await client.get(f"/api/{collection}", params={"last": 0}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["count"]
