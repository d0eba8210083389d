"""TTL eviction of non-base replicas, per placement policy and per bucket, on SQLite and
PostgreSQL: which copies expire, when, and that the base copy never does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.skystore.locator import buckets, replicas, versions, writes
from services.skystore.locator.eviction import bucket_ttl
from services.skystore.locator.registry import put_link, put_region
from services.skystore.schemas import (
    BucketCreate,
    BucketEviction,
    Link,
    Region,
    UploadComplete,
    UploadStart,
)

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
EDGE, CLOUD = "local:edge", "local:cloud"
REGIONS = [
    Region(name=EDGE, endpoint="http://127.0.0.1:1", credentials="env:X", storage_cost=0.02),
    Region(name=CLOUD, endpoint="http://127.0.0.1:1", credentials="env:X", storage_cost=0.045),
]
# t_even of a cloud replica of an edge object: 0.09 / 0.045 = 2 months.
LINKS = [Link(src=EDGE, dst=CLOUD, latency_ms=20, egress_cost=0.09)]
HOUR = timedelta(hours=1)


@pytest.fixture
async def regions(sessions: Sessions) -> Sessions:
    async with sessions.begin() as session:
        for region in REGIONS:
            await put_region(session, region=region, now=T0)
        for link in LINKS:
            await put_link(session, link=link)
    return sessions


async def _replicated(
    sessions: Sessions, bucket: str, policy: str, eviction: BucketEviction | None = None
) -> int:
    """A bucket with one object: its base copy in edge, a ready replica in cloud (read at T0);
    returns the replica's locator id."""
    request = BucketCreate(
        name=bucket,
        owner="user/alice",
        regions=[EDGE, CLOUD],
        base_region=EDGE,
        policy=policy,
        eviction=eviction or BucketEviction(),
    )
    async with sessions.begin() as session:
        await buckets.start_create_bucket(session, request=request, default_policy=policy, now=T0)
        await buckets.complete_create_bucket(session, name=bucket)
        started = await writes.start_upload(
            session,
            request=UploadStart(
                bucket=bucket, key="k", owner="user/alice", regions=[EDGE], base_region=EDGE
            ),
            now=T0,
        )
        done = UploadComplete(size=1, etag="e", regions=[EDGE])
        await writes.complete_upload(session, object_id=started.id, done=done, now=T0)
        replica = await replicas.start_replica(session, object_id=started.id, region=CLOUD, now=T0)
        await replicas.complete_replica(session, locator_id=replica.id, now=T0)
    return replica.id


async def _evict(sessions: Sessions, at: datetime, default: str = "fixed_ttl") -> set[str]:
    """Buckets whose replica the sweep at `at` evicts (default TTL 1 h)."""
    rule = bucket_ttl(default, fixed=HOUR, regions=REGIONS, links=LINKS)
    async with sessions.begin() as session:
        evicted = await replicas.evict_expired(session, now=at, ttl_for=rule)
    async with sessions() as session:
        names = {}
        for bucket in await buckets.list_buckets(session):
            info = await versions.get_object(session, bucket=bucket.name, key="k")
            names[info.id] = bucket.name
    return {names[g.object_id] for g in evicted}


async def _copies(sessions: Sessions, bucket: str) -> set[tuple[str, str, bool]]:
    async with sessions() as session:
        info = await versions.get_object(session, bucket=bucket, key="k")
    return {(c.region, c.status, c.is_base) for c in info.locators}


async def test_read_caches_expire_and_policy_copies_stay(regions: Sessions) -> None:
    for policy in ("copy_on_read", "write_local", "push", "replicate_all"):
        await _replicated(regions, policy.replace("_", "-"), policy)
    assert await _evict(regions, T0 + HOUR / 2) == set()
    # write_local's replica is left from an earlier policy: nothing asks for it, so it is a cache.
    assert await _evict(regions, T0 + 2 * HOUR) == {"copy-on-read", "write-local"}
    assert await _evict(regions, T0 + timedelta(days=3650)) == set()
    for bucket in ("push", "replicate-all"):
        assert await _copies(regions, bucket) == {(EDGE, "ready", True), (CLOUD, "ready", False)}
    for bucket in ("copy-on-read", "write-local"):
        assert await _copies(regions, bucket) == {
            (EDGE, "ready", True),
            (CLOUD, "pending_deletion", False),
        }


async def test_the_base_copy_is_never_evicted(regions: Sessions) -> None:
    await _replicated(regions, "cached", "copy_on_read", BucketEviction(replica_ttl=1))
    assert await _evict(regions, T0 + timedelta(days=36500)) == {"cached"}
    assert (EDGE, "ready", True) in await _copies(regions, "cached")
    assert await _evict(regions, T0 + timedelta(days=73000)) == set()
    assert (EDGE, "ready", True) in await _copies(regions, "cached")


async def test_a_read_restarts_the_replica_ttl(regions: Sessions) -> None:
    replica = await _replicated(regions, "read", "copy_on_read")
    async with regions.begin() as session:
        await replicas.touch(session, locator_id=replica, now=T0 + HOUR * 0.9)
    assert await _evict(regions, T0 + HOUR * 1.5) == set()
    assert await _evict(regions, T0 + HOUR * 2) == {"read"}


async def test_a_bucket_sets_its_own_eviction(regions: Sessions) -> None:
    await _replicated(regions, "forever", "copy_on_read", BucketEviction(eviction="none"))
    await _replicated(regions, "break-even", "copy_on_read", BucketEviction(eviction="t_even"))
    await _replicated(regions, "short", "copy_on_read", BucketEviction(replica_ttl=60))
    await _replicated(regions, "default", "copy_on_read")
    assert await _evict(regions, T0 + timedelta(minutes=2), default="none") == {"short"}
    assert await _evict(regions, T0 + timedelta(days=59), default="none") == set()
    assert await _evict(regions, T0 + timedelta(days=61), default="none") == {"break-even"}
    # The locator's default (here fixed_ttl, 1 h) applies where the bucket sets nothing.
    assert await _evict(regions, T0 + timedelta(days=62)) == {"default"}


async def test_set_eviction_changes_a_bucket_later(regions: Sessions) -> None:
    await _replicated(regions, "later", "copy_on_read")
    async with regions.begin() as session:
        bucket = await buckets.set_eviction(
            session, name="later", eviction=BucketEviction(eviction="fixed_ttl", replica_ttl=30)
        )
    assert bucket.eviction == BucketEviction(eviction="fixed_ttl", replica_ttl=30)
    assert await _evict(regions, T0 + timedelta(minutes=1), default="none") == {"later"}
