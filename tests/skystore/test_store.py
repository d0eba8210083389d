"""The locator's two-phase protocol, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicekit.errors import Conflict, InvalidInput, NotFound
from services.skystore.locator import buckets, reaper, replicas, versions, writes
from services.skystore.locator.registry import put_region
from services.skystore.schemas import BucketCreate, Region, UploadComplete, UploadStart
from services.skystore.tables import objects

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
EDGE, CLOUD = "local:edge", "local:cloud"


async def _regions(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        for name in (EDGE, CLOUD):
            region = Region(name=name, endpoint="http://127.0.0.1:1", credentials="env:X")
            await put_region(session, region=region, now=T0)


async def _bucket(sessions: Sessions, name: str = "photos", owner: str = "user/alice") -> None:
    request = BucketCreate(name=name, owner=owner, regions=[EDGE, CLOUD], base_region=EDGE)
    async with sessions.begin() as session:
        await buckets.start_create_bucket(
            session, request=request, default_policy="write_local", now=T0
        )
    async with sessions.begin() as session:
        await buckets.complete_create_bucket(session, name=name)


async def _put(
    sessions: Sessions, key: str, etag: str, *, bucket: str = "photos", regions=(EDGE,)
) -> int:
    request = UploadStart(
        bucket=bucket, key=key, owner="user/alice", regions=[EDGE], base_region=EDGE
    )
    async with sessions.begin() as session:
        started = await writes.start_upload(session, request=request, now=T0)
    done = UploadComplete(size=len(etag), etag=etag, regions=list(regions))
    async with sessions.begin() as session:
        await writes.complete_upload(session, object_id=started.id, done=done, now=T0)
    return started.id


@pytest.fixture
async def photos(sessions: Sessions) -> Sessions:
    await _regions(sessions)
    await _bucket(sessions)
    return sessions


async def test_pending_bucket_is_invisible_until_completed(sessions: Sessions) -> None:
    await _regions(sessions)
    request = BucketCreate(name="logs", owner="user/bob", regions=[CLOUD], base_region=EDGE)
    async with sessions.begin() as session:
        plan = await buckets.start_create_bucket(
            session, request=request, default_policy="write_local", now=T0
        )
    assert {p.region for p in plan.physical} == {EDGE, CLOUD}
    async with sessions() as session:
        with pytest.raises(NotFound) as missing:
            await buckets.get_bucket(session, "logs")
        assert missing.value.code == "NoSuchBucket"
    async with sessions.begin() as session:
        bucket = await buckets.complete_create_bucket(session, name="logs")
    assert bucket.status == "ready"
    assert bucket.policy == "write_local"


async def test_every_logical_bucket_has_its_own_physical_buckets(photos: Sessions) -> None:
    await _bucket(photos, "videos")
    async with photos() as session:
        a = await buckets.get_bucket(session, "photos")
        b = await buckets.get_bucket(session, "videos")
    names = [p.name for p in a.physical + b.physical]
    assert len(set(names)) == 4
    assert all(n.startswith(("photos-", "videos-")) for n in names)


async def test_bucket_name_taken_answers_the_s3_codes(photos: Sessions) -> None:
    async with photos.begin() as session:
        for owner, code in (
            ("user/alice", "BucketAlreadyOwnedByYou"),
            ("user/bob", "BucketAlreadyExists"),
        ):
            request = BucketCreate(name="photos", owner=owner, regions=[EDGE], base_region=EDGE)
            with pytest.raises(Conflict) as taken:
                await buckets.start_create_bucket(
                    session, request=request, default_policy="write_local", now=T0
                )
            assert taken.value.code == code


@pytest.mark.parametrize(
    "name", ["ab", "Photos", "a..b", "-abc", "abc-", "192.168.1.1", "a_b", "x" * 64]
)
def test_invalid_bucket_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput) as invalid:
        buckets.check_bucket_name(name)
    assert invalid.value.code == "InvalidBucketName"


async def test_non_empty_bucket_cannot_be_deleted(photos: Sessions) -> None:
    await _put(photos, "a.jpg", "e1")
    async with photos.begin() as session:
        with pytest.raises(Conflict) as refused:
            await buckets.start_delete_bucket(session, name="photos")
    assert refused.value.code == "BucketNotEmpty"


async def test_deleted_bucket_disappears_at_start_and_is_gone_after_completion(
    photos: Sessions,
) -> None:
    async with photos.begin() as session:
        plan = await buckets.start_delete_bucket(session, name="photos")
    assert len(plan.physical) == 2
    async with photos() as session:
        assert await buckets.list_buckets(session) == []
    async with photos.begin() as session:
        await buckets.complete_delete_bucket(session, name="photos")
    await _bucket(photos)  # the name is free again


async def test_pending_upload_is_not_visible_and_the_old_version_still_is(photos: Sessions) -> None:
    await _put(photos, "a.jpg", "v1")
    request = UploadStart(
        bucket="photos", key="a.jpg", owner="user/alice", regions=[EDGE], base_region=EDGE
    )
    async with photos.begin() as session:
        await writes.start_upload(session, request=request, now=T0)
    async with photos() as session:
        current = await versions.get_object(session, bucket="photos", key="a.jpg")
    assert current.etag == "v1"


async def test_overwrite_is_real_and_retires_the_previous_version(photos: Sessions) -> None:
    first = await _put(photos, "a.jpg", "v1")
    await _put(photos, "a.jpg", "v2")
    async with photos() as session:
        current = await versions.get_object(session, bucket="photos", key="a.jpg")
        old = (await session.execute(sa.select(objects).where(objects.c.id == first))).one()
        litter = await reaper.garbage(session)
    assert (current.etag, current.generation) == ("v2", 2)
    assert old.status == "pending_deletion"
    assert [g.object_id for g in litter] == [first]
    assert current.locators[0].physical_key != litter[0].physical_key


async def test_only_written_regions_become_ready_copies(photos: Sessions) -> None:
    request = UploadStart(
        bucket="photos", key="k", owner="user/alice", regions=[EDGE, CLOUD], base_region=EDGE
    )
    async with photos.begin() as session:
        started = await writes.start_upload(session, request=request, now=T0)
        done = UploadComplete(size=1, etag="e", regions=[CLOUD])
        info = (
            await writes.complete_upload(session, object_id=started.id, done=done, now=T0)
        ).object
    assert {c.region: c.status for c in info.locators} == {CLOUD: "ready", EDGE: "pending_deletion"}
    assert info.ready_in(CLOUD) is not None and info.ready_in(EDGE) is None


async def test_sixteen_concurrent_writers_leave_one_listed_object(photos: Sessions) -> None:
    request = UploadStart(
        bucket="photos", key="hot", owner="user/alice", regions=[EDGE], base_region=EDGE
    )
    started = []
    for _ in range(16):
        async with photos.begin() as session:
            started.append(await writes.start_upload(session, request=request, now=T0))

    async def commit(index: int) -> int:
        async with photos.begin() as session:
            done = UploadComplete(size=2, etag=f"etag-{index}", regions=[EDGE])
            info = await writes.complete_upload(
                session, object_id=started[index].id, done=done, now=T0
            )
            return int(info.object.generation or 0)

    generations = await asyncio.gather(*(commit(i) for i in range(16)))
    assert sorted(generations) == list(range(1, 17))
    async with photos() as session:
        listed = (
            await session.execute(
                sa.select(objects).where(objects.c.key == "hot", objects.c.status == "ready")
            )
        ).all()
        current = await versions.get_object(session, bucket="photos", key="hot")
    assert len(listed) == 1
    # Last writer by commit order wins: the highest generation is the listed one.
    winner = generations.index(16)
    assert current.etag == f"etag-{winner}" and current.generation == 16


async def test_completing_a_rolled_back_upload_fails_and_lists_nothing(photos: Sessions) -> None:
    request = UploadStart(
        bucket="photos", key="slow", owner="user/alice", regions=[EDGE], base_region=EDGE
    )
    async with photos.begin() as session:
        started = await writes.start_upload(session, request=request, now=T0)
    async with photos.begin() as session:
        rolled = await reaper.roll_back_stale(
            session, uploads_before=T0 + timedelta(seconds=1), multipart_before=T0
        )
    assert rolled == 1
    async with photos.begin() as session:
        with pytest.raises(NotFound) as gone:
            done = UploadComplete(size=1, etag="e", regions=[EDGE])
            await writes.complete_upload(session, object_id=started.id, done=done, now=T0)
    assert gone.value.code == "NoSuchUpload"
    async with photos() as session:
        with pytest.raises(NotFound):
            await versions.get_object(session, bucket="photos", key="slow")
        assert [g.object_id for g in await reaper.garbage(session)] == [started.id]


async def test_fresh_pending_uploads_are_not_rolled_back(photos: Sessions) -> None:
    request = UploadStart(
        bucket="photos",
        key="k",
        owner="user/alice",
        regions=[EDGE],
        base_region=EDGE,
        multipart=True,
    )
    async with photos.begin() as session:
        started = await writes.start_upload(session, request=request, now=T0)
        rolled = await reaper.roll_back_stale(
            session, uploads_before=T0 + timedelta(hours=1), multipart_before=T0
        )
    assert rolled == 0
    async with photos() as session:
        upload = await writes.get_upload(
            session, bucket="photos", upload_id=started.upload_id or ""
        )
    assert upload.status == "pending"


async def test_forgetting_garbage_removes_versions_without_copies(photos: Sessions) -> None:
    first = await _put(photos, "a", "v1")
    await _put(photos, "a", "v2")
    async with photos.begin() as session:
        litter = await reaper.garbage(session)
        await reaper.forget_garbage(session, locator_ids=[g.locator_id for g in litter])
    async with photos() as session:
        assert await reaper.garbage(session) == []
        left = (await session.execute(sa.select(objects.c.id))).scalars().all()
    assert first not in left and len(left) == 1


async def test_delete_object_unlists_it_and_leaves_garbage(photos: Sessions) -> None:
    await _put(photos, "a", "v1")
    async with photos.begin() as session:
        generation, litter = await writes.start_delete_object(session, bucket="photos", key="a")
        again = await writes.start_delete_object(session, bucket="photos", key="a")
    assert len(litter) == 1
    # Each delete is ordered after the write it removes, and after the delete before it.
    assert again == (generation + 1, [])
    assert generation == 2
    async with photos() as session:
        with pytest.raises(NotFound) as missing:
            await versions.get_object(session, bucket="photos", key="a")
    assert missing.value.code == "NoSuchKey"
    await _put(photos, "a", "v3")
    async with photos() as session:
        again = await versions.get_object(session, bucket="photos", key="a")
    assert again.generation == 4  # put, delete, delete of nothing, put


async def test_aborted_upload_is_no_longer_an_upload(photos: Sessions) -> None:
    request = UploadStart(
        bucket="photos",
        key="k",
        owner="user/alice",
        regions=[EDGE],
        base_region=EDGE,
        multipart=True,
    )
    async with photos.begin() as session:
        started = await writes.start_upload(session, request=request, now=T0)
        await writes.abort_upload(session, object_id=started.id)
    async with photos() as session:
        with pytest.raises(NotFound) as missing:
            await writes.get_upload(session, bucket="photos", upload_id=started.upload_id or "")
    assert missing.value.code == "NoSuchUpload"


async def test_a_replica_being_copied_when_its_version_is_replaced_is_left_to_its_copier(
    photos: Sessions,
) -> None:
    first = await _put(photos, "a", "v1")
    async with photos.begin() as session:
        copying = await replicas.start_replica(session, object_id=first, region=CLOUD, now=T0)
    await _put(photos, "a", "v2")  # the overwrite commits while the copy is in flight
    async with photos() as session:
        garbage = {g.locator_id for g in await reaper.garbage(session)}
    # Removing it now would race the copier, whose bytes would then stay behind unknown.
    assert copying.id not in garbage and len(garbage) == 1
    async with photos.begin() as session:
        done = await replicas.complete_replica(session, locator_id=copying.id, now=T0)
    assert done.status == "pending_deletion"
    async with photos() as session:
        assert copying.id in {g.locator_id for g in await reaper.garbage(session)}


async def test_a_copier_that_never_finishes_a_replaced_version_is_rolled_back(
    photos: Sessions,
) -> None:
    first = await _put(photos, "a", "v1")
    async with photos.begin() as session:
        copying = await replicas.start_replica(session, object_id=first, region=CLOUD, now=T0)
    async with photos.begin() as session:
        await writes.start_delete_object(session, bucket="photos", key="a")
    async with photos.begin() as session:
        later = T0 + timedelta(hours=2)
        await reaper.roll_back_stale(session, uploads_before=later, multipart_before=later)
    async with photos() as session:
        assert copying.id in {g.locator_id for g in await reaper.garbage(session)}
