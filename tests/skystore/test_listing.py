"""ListObjects over the locator: prefixes, delimiters, markers, byte order, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.skystore.locator import buckets, writes
from services.skystore.locator.listing import list_objects
from services.skystore.locator.registry import put_region
from services.skystore.schemas import BucketCreate, Region, UploadComplete, UploadStart

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
KEYS = ["a/1", "a/2", "a/b/3", "b", "c/x", "c/y", "d", "é", "z", "\U0001f600"]


@pytest.fixture
async def filled(sessions: Sessions) -> Sessions:
    async with sessions.begin() as session:
        region = Region(name="r", endpoint="http://127.0.0.1:1", credentials="env:X")
        await put_region(session, region=region, now=T0)
        request = BucketCreate(name="list", owner="user/a", regions=["r"], base_region="r")
        await buckets.start_create_bucket(
            session, request=request, default_policy="write_local", now=T0
        )
        await buckets.complete_create_bucket(session, name="list")
        for key in reversed(KEYS):
            upload = UploadStart(
                bucket="list", key=key, owner="user/a", regions=["r"], base_region="r"
            )
            started = await writes.start_upload(session, request=upload, now=T0)
            done = UploadComplete(size=1, etag="e", regions=["r"])
            await writes.complete_upload(session, object_id=started.id, done=done, now=T0)
    return sessions


async def test_keys_come_in_utf8_byte_order(filled: Sessions) -> None:
    async with filled() as session:
        page = await list_objects(session, bucket="list")
    keys = [o.key for o in page.contents]
    assert keys == sorted(KEYS, key=lambda k: k.encode())
    assert not page.is_truncated


async def test_delimiter_rolls_up_common_prefixes(filled: Sessions) -> None:
    async with filled() as session:
        page = await list_objects(session, bucket="list", delimiter="/")
    assert [o.key for o in page.contents] == ["b", "d", "z", "é", "\U0001f600"]
    assert page.common_prefixes == ["a/", "c/"]


async def test_prefix_and_delimiter_list_one_level(filled: Sessions) -> None:
    async with filled() as session:
        page = await list_objects(session, bucket="list", prefix="a/", delimiter="/")
    assert [o.key for o in page.contents] == ["a/1", "a/2"]
    assert page.common_prefixes == ["a/b/"]


async def test_pages_resume_from_the_marker_without_repeats(filled: Sessions) -> None:
    seen: list[str] = []
    marker = ""
    async with filled() as session:
        for _ in range(10):
            page = await list_objects(
                session, bucket="list", delimiter="/", marker=marker, max_keys=2
            )
            seen += sorted([o.key for o in page.contents] + page.common_prefixes)
            if not page.is_truncated:
                break
            marker = page.next_marker or ""
    assert seen == ["a/", "b", "c/", "d", "z", "é", "\U0001f600"]


async def test_start_after_a_key_excludes_it(filled: Sessions) -> None:
    async with filled() as session:
        page = await list_objects(session, bucket="list", marker="c/x")
    assert [o.key for o in page.contents][:2] == ["c/y", "d"]


async def test_prefix_with_no_match_lists_nothing(filled: Sessions) -> None:
    async with filled() as session:
        page = await list_objects(session, bucket="list", prefix="q")
    assert page.contents == [] and page.common_prefixes == [] and not page.is_truncated
