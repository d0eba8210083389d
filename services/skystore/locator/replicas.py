"""Replicas beyond the written copies: copy-on-read and push replication, access times, and
TTL eviction of non-base copies (the base copy is never evicted)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.errors import Conflict, NotFound
from services.skystore.locator import events
from services.skystore.locator.eviction import BucketTTL
from services.skystore.locator.versions import garbage_of, locator_of
from services.skystore.policies import keeping_policies
from services.skystore.schemas import BucketEviction, Garbage, Locator
from services.skystore.states import State, check_transition
from services.skystore.tables import buckets, locators, objects, physical_buckets

__all__ = [
    "abort_replica",
    "complete_replica",
    "evict_expired",
    "missing_replicas",
    "start_push",
    "start_replica",
    "touch",
]


async def start_replica(
    session: AsyncSession, *, object_id: int, region: str, now: datetime
) -> Locator:
    """Phase one of a new copy of a listed version in `region`."""
    row = (
        await session.execute(
            sa.select(objects.c.id, objects.c.uid, objects.c.status, objects.c.bucket_id).where(
                objects.c.id == object_id
            )
        )
    ).first()
    if row is None or row.status != State.READY:
        raise NotFound(f"object {object_id} is not a listed version", code="NoSuchKey")
    physical = (
        await session.execute(
            sa.select(physical_buckets.c.name).where(
                physical_buckets.c.bucket_id == row.bucket_id, physical_buckets.c.region == region
            )
        )
    ).scalar_one_or_none()
    if physical is None:
        raise Conflict(f"the bucket has no physical bucket in {region}", code="OperationAborted")
    existing = (
        await session.execute(
            sa.select(locators.c.id).where(
                locators.c.object_id == object_id, locators.c.region == region
            )
        )
    ).first()
    if existing is not None:
        raise Conflict(
            f"object {object_id} already has a copy in {region}", code="OperationAborted"
        )
    result = await session.execute(
        sa.insert(locators)
        .values(
            object_id=object_id,
            region=region,
            physical_bucket=physical,
            physical_key=row.uid,
            status=State.PENDING,
            is_base=False,
            created=now,
            last_access=now,
        )
        .returning(locators)
    )
    return locator_of(result.one())


async def complete_replica(session: AsyncSession, *, locator_id: int, now: datetime) -> Locator:
    """Phase two: the copy exists. If its version was replaced meanwhile, it is garbage."""
    row = (
        await session.execute(
            sa.select(
                locators,
                objects.c.status.label("object_status"),
                objects.c.key,
                buckets.c.name.label("bucket"),
                objects.c.generation,
            )
            .join(objects, objects.c.id == locators.c.object_id)
            .join(buckets, buckets.c.id == objects.c.bucket_id)
            .where(locators.c.id == locator_id)
        )
    ).first()
    if row is None:
        raise NotFound(f"replica {locator_id} does not exist", code="NoSuchKey")
    target = State.READY if row.object_status == State.READY else State.PENDING_DELETION
    check_transition(f"replica {locator_id}", row.status, target)
    await session.execute(
        sa.update(locators)
        .where(locators.c.id == locator_id)
        .values(status=target, last_access=now)
    )
    if target == State.READY:
        await events.announce(
            session,
            "replicated",
            bucket=row.bucket,
            key=row.key,
            generation=row.generation,
            region=row.region,
        )
    updated = (await session.execute(sa.select(locators).where(locators.c.id == locator_id))).one()
    return locator_of(updated)


async def abort_replica(session: AsyncSession, *, locator_id: int) -> list[Garbage]:
    result = await session.execute(
        sa.update(locators)
        .where(locators.c.id == locator_id, locators.c.status == State.PENDING)
        .values(status=State.PENDING_DELETION)
        .returning(locators)
    )
    return [garbage_of(row) for row in result]


async def touch(session: AsyncSession, *, locator_id: int, now: datetime) -> None:
    """A read served from this copy: its TTL starts again."""
    await session.execute(
        sa.update(locators).where(locators.c.id == locator_id).values(last_access=now)
    )


async def evict_expired(
    session: AsyncSession, *, now: datetime, ttl_for: BucketTTL
) -> list[Garbage]:
    """Ready non-base copies unread for longer than their bucket's TTL become garbage. Base
    copies are never evicted, nor the copies of policies that keep them (replicate_all, push):
    those copies are the policy's promise, not caches."""
    result = await session.execute(
        sa.select(
            locators,
            buckets.c.base_region,
            buckets.c.name.label("bucket"),
            buckets.c.eviction,
            buckets.c.replica_ttl,
            objects.c.key,
        )
        .join(objects, objects.c.id == locators.c.object_id)
        .join(buckets, buckets.c.id == objects.c.bucket_id)
        .where(
            locators.c.status == State.READY,
            locators.c.is_base.is_(False),
            buckets.c.policy.not_in(keeping_policies()),
        )
    )
    evicted: list[Garbage] = []
    for row in result.all():
        settings = BucketEviction(eviction=row.eviction, replica_ttl=row.replica_ttl)
        ttl = ttl_for(settings, row.region, row.base_region)
        if ttl is None or row.last_access + ttl > now:
            continue
        moved = await session.execute(
            sa.update(locators)
            .where(locators.c.id == row.id, locators.c.status == State.READY)
            .values(status=State.PENDING_DELETION)
        )
        if moved.rowcount == 1:  # type: ignore[attr-defined]
            evicted.append(garbage_of(row))
            await events.announce(
                session, "evicted", bucket=row.bucket, key=row.key, region=row.region
            )
    return evicted


async def missing_replicas(
    session: AsyncSession, *, policy: str, object_id: int | None = None, limit: int = 100
) -> list[tuple[int, str, Locator]]:
    """(object id, region lacking a copy, a ready copy to read) for listed versions of buckets
    with `policy` (or only object `object_id`), for every region the bucket has a physical
    bucket in. A copy being made (pending) or removed counts as present."""
    copy = locators.alias("copy")
    query = (
        sa.select(objects.c.id, physical_buckets.c.region)
        .join(buckets, buckets.c.id == objects.c.bucket_id)
        .join(physical_buckets, physical_buckets.c.bucket_id == buckets.c.id)
        .where(
            buckets.c.policy == policy,
            objects.c.status == State.READY,
            ~sa.exists().where(
                copy.c.object_id == objects.c.id, copy.c.region == physical_buckets.c.region
            ),
        )
        .order_by(objects.c.id, physical_buckets.c.region)
        .limit(limit)
    )
    if object_id is not None:
        query = query.filter(objects.c.id == object_id)
    found = []
    for row in (await session.execute(query)).all():
        source = (
            await session.execute(
                sa.select(locators)
                .where(locators.c.object_id == row.id, locators.c.status == State.READY)
                .order_by(locators.c.is_base.desc())
                .limit(1)
            )
        ).first()
        if source is not None:
            found.append((row.id, row.region, locator_of(source)))
    return found


async def start_push(
    session: AsyncSession, *, bucket: str, key: str, generation: int, policy: str, now: datetime
) -> list[tuple[Locator, Locator]]:
    """Phase one of the copies a `policy` bucket still lacks of generation `generation` of
    bucket/key: (a ready copy to read, the started replica) each. Nothing if that version is
    no longer listed (a newer write has its own event) or the bucket has another policy."""
    row = (
        await session.execute(
            sa.select(objects.c.id)
            .join(buckets, buckets.c.id == objects.c.bucket_id)
            .where(
                buckets.c.name == bucket,
                buckets.c.policy == policy,
                objects.c.key == key,
                objects.c.generation == generation,
                objects.c.status == State.READY,
            )
        )
    ).first()
    if row is None:
        return []
    started = []
    for object_id, region, source in await missing_replicas(
        session, policy=policy, object_id=row.id
    ):
        target = await start_replica(session, object_id=object_id, region=region, now=now)
        started.append((source, target))
    return started
