"""The locator's object lookup (one thread hop on SQLite): the same answers and errors as the
session path, and every committed write visible to the next lookup."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicekit.errors import NotFound
from services.skystore.locator import buckets, versions, writes
from services.skystore.locator.lookup import ObjectLookup
from services.skystore.locator.registry import put_region
from services.skystore.schemas import BucketCreate, Region, UploadComplete, UploadStart

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
EDGE = "local:edge"


async def _write(sessions: Sessions, etag: str, layouts: dict[str, str] | None = None) -> None:
    async with sessions.begin() as session:
        started = await writes.start_upload(
            session,
            request=UploadStart(
                bucket="box", key="k", owner="user/a", regions=[EDGE], base_region=EDGE
            ),
            now=T0,
        )
    async with sessions.begin() as session:
        done = UploadComplete(size=len(etag), etag=etag, regions=[EDGE], layouts=layouts or {})
        await writes.complete_upload(session, object_id=started.id, done=done, now=T0)


@pytest.fixture
async def lookup(sessions: Sessions, database_url: str):
    async with sessions.begin() as session:
        region = Region(name=EDGE, endpoint="http://127.0.0.1:1", credentials="env:X")
        await put_region(session, region=region, now=T0)
        request = BucketCreate(name="box", owner="user/a", regions=[EDGE], base_region=EDGE)
        await buckets.start_create_bucket(
            session, request=request, default_policy="write_local", now=T0
        )
        await buckets.complete_create_bucket(session, name="box")
    found = ObjectLookup(database_url, sessions)
    yield found
    found.close()


async def test_lookup_answers_as_the_session_does(lookup: ObjectLookup, sessions) -> None:
    await _write(sessions, "one")
    async with sessions() as session:
        expected = await versions.get_object(session, bucket="box", key="k")
    assert await lookup.get("box", "k") == expected


async def test_every_committed_overwrite_is_seen_by_the_next_lookup(
    lookup: ObjectLookup, sessions
) -> None:
    for n in range(1, 6):
        await _write(sessions, f"etag-{n}")
        info = await lookup.get("box", "k")
        assert (info.generation, info.etag) == (n, f"etag-{n}")
        assert [c.status for c in info.locators] == ["ready"]


async def test_a_copys_recorded_layout_comes_with_it_until_an_overwrite_without_one(
    lookup: ObjectLookup, sessions
) -> None:
    layout = '{"size":3,"chunks":[["3,0a1b2c",0,3]]}'
    await _write(sessions, "one", {EDGE: layout, "local:elsewhere": "ignored: no copy there"})
    assert [c.layout for c in (await lookup.get("box", "k")).locators] == [layout]
    await _write(sessions, "two")
    assert [c.layout for c in (await lookup.get("box", "k")).locators] == [None]


async def test_missing_key_and_bucket_are_named(lookup: ObjectLookup) -> None:
    with pytest.raises(NotFound) as missing:
        await lookup.get("box", "nothing")
    assert missing.value.code == "NoSuchKey"
    with pytest.raises(NotFound) as missing:
        await lookup.get("nobucket", "k")
    assert missing.value.code == "NoSuchBucket"
