"""The locator's internal API, and its collector removing physical garbage from real S3."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from servicekit.testing import app_client
from services.skystore.locator.app import create_app
from services.skystore.schemas import Region
from services.skystore.settings import LocatorSettings
from services.skystore.tables import access_keys


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def locator(
    tmp_path: Path, database_url: str, clock: Clock, skystore_regions: list[Region]
) -> AsyncIterator[httpx.AsyncClient]:
    settings = LocatorSettings(
        database_url=database_url,
        reaper_interval=0,
        pending_timeout=60,
        internal_token=str(tmp_path / "token"),
        nats_url="",
    )
    app = create_app(settings, clock=clock)
    async with app_client(app) as client:
        client.headers["Authorization"] = f"Bearer {(tmp_path / 'token').read_text()}"
        for region in skystore_regions:
            response = await client.put(f"/regions/{region.name}", json=region.model_dump())
            assert response.status_code == 200, response.text
        client.app = app  # type: ignore[attr-defined]
        yield client


async def _bucket(locator: httpx.AsyncClient, physical: Callable[[str], Any], name: str) -> dict:
    body = {
        "name": name,
        "owner": "user/alice",
        "regions": ["local:edge"],
        "base_region": "local:edge",
    }
    started = (await locator.post("/buckets", json=body)).json()
    for p in started["physical"]:
        physical(p["region"]).create_bucket(Bucket=p["name"])
    completed = await locator.post(f"/buckets/{name}/complete")
    assert completed.status_code == 200, completed.text
    return completed.json()


async def test_requests_without_the_internal_token_are_refused(locator: httpx.AsyncClient) -> None:
    response = await locator.get("/buckets", headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401
    assert response.json()["code"] == "Unauthorized"


async def test_errors_carry_the_s3_code(locator: httpx.AsyncClient) -> None:
    response = await locator.get("/buckets/nope")
    assert response.status_code == 404
    assert response.json()["code"] == "NoSuchBucket"


async def test_access_key_secret_is_encrypted_at_rest(locator: httpx.AsyncClient) -> None:
    created = (await locator.post("/access-keys", json={"principal": "user/alice"})).json()
    fetched = (await locator.get(f"/access-keys/{created['key_id']}")).json()
    assert fetched == created
    async with locator.app.state.sessions() as session:  # type: ignore[attr-defined]
        stored = (await session.execute(sa.select(access_keys.c.secret))).scalar_one()
    assert created["secret"] not in stored
    unknown = await locator.get("/access-keys/AKIDNOPE")
    assert unknown.json()["code"] == "InvalidAccessKeyId"


async def test_a_deleted_access_key_is_gone_and_deleting_it_again_is_404(
    locator: httpx.AsyncClient,
) -> None:
    kept = (await locator.post("/access-keys", json={"principal": "user/alice"})).json()
    revoked = (await locator.post("/access-keys", json={"principal": "user/alice"})).json()
    deleted = await locator.delete(f"/access-keys/{revoked['key_id']}")
    assert deleted.status_code == 204
    assert deleted.content == b""
    gone = await locator.get(f"/access-keys/{revoked['key_id']}")
    assert gone.status_code == 404
    assert gone.json()["code"] == "InvalidAccessKeyId"
    again = await locator.delete(f"/access-keys/{revoked['key_id']}")
    assert again.status_code == 404
    assert again.json()["code"] == "InvalidAccessKeyId"
    assert (await locator.get(f"/access-keys/{kept['key_id']}")).json() == kept


async def test_deleting_an_access_key_needs_the_internal_token(
    locator: httpx.AsyncClient,
) -> None:
    created = (await locator.post("/access-keys", json={"principal": "user/alice"})).json()
    refused = await locator.delete(
        f"/access-keys/{created['key_id']}", headers={"Authorization": "Bearer wrong"}
    )
    assert refused.status_code == 401
    assert (await locator.get(f"/access-keys/{created['key_id']}")).status_code == 200


async def test_stale_upload_is_rolled_back_and_its_bytes_removed(
    locator: httpx.AsyncClient, physical: Callable[[str], Any], clock: Clock
) -> None:
    bucket = await _bucket(locator, physical, "stale-upload")
    body = {
        "bucket": "stale-upload",
        "key": "k",
        "owner": "user/alice",
        "regions": ["local:edge"],
        "base_region": "local:edge",
    }
    started = (await locator.post("/uploads", json=body)).json()
    copy = started["locators"][0]
    edge = physical("local:edge")
    edge.put_object(Bucket=copy["physical_bucket"], Key=copy["physical_key"], Body=b"partial")

    fresh = (await locator.post("/sweep")).json()
    assert fresh["rolled_back"] == 0 and fresh["removed"] == 0

    clock.now += timedelta(seconds=61)
    swept = (await locator.post("/sweep")).json()
    assert swept["rolled_back"] == 1 and swept["removed"] == 1
    listed = edge.list_objects_v2(Bucket=bucket["physical"][0]["name"])
    assert listed.get("KeyCount", 0) == 0
    done = {"size": 7, "etag": "x", "regions": ["local:edge"]}
    late = await locator.post(f"/uploads/{started['id']}/complete", json=done)
    assert late.status_code == 404 and late.json()["code"] == "NoSuchUpload"


async def test_overwritten_copy_is_collected(
    locator: httpx.AsyncClient, physical: Callable[[str], Any]
) -> None:
    await _bucket(locator, physical, "overwrites")
    edge = physical("local:edge")
    body = {
        "bucket": "overwrites",
        "key": "k",
        "owner": "user/alice",
        "regions": ["local:edge"],
        "base_region": "local:edge",
    }
    keys = []
    for payload in (b"one", b"two"):
        started = (await locator.post("/uploads", json=body)).json()
        copy = started["locators"][0]
        edge.put_object(Bucket=copy["physical_bucket"], Key=copy["physical_key"], Body=payload)
        done = {"size": 3, "etag": payload.decode(), "regions": ["local:edge"]}
        assert (
            await locator.post(f"/uploads/{started['id']}/complete", json=done)
        ).status_code == 200
        keys.append((copy["physical_bucket"], copy["physical_key"]))
    swept = (await locator.post("/sweep")).json()
    assert swept["removed"] == 1
    remaining = [o["Key"] for o in edge.list_objects_v2(Bucket=keys[0][0]).get("Contents", [])]
    assert remaining == [keys[1][1]]
    current = (await locator.get("/buckets/overwrites/objects/k")).json()
    assert current["etag"] == "two" and current["generation"] == 2


async def test_deleted_bucket_is_removed_physically_by_the_sweep(
    locator: httpx.AsyncClient, physical: Callable[[str], Any]
) -> None:
    bucket = await _bucket(locator, physical, "short-lived")
    started = await locator.delete("/buckets/short-lived")
    assert started.status_code == 200
    swept = (await locator.post("/sweep")).json()
    assert swept["buckets_removed"] == 1
    names = [b["Name"] for b in physical("local:edge").list_buckets()["Buckets"]]
    assert bucket["physical"][0]["name"] not in names
    assert (await locator.get("/buckets/short-lived")).status_code == 404
