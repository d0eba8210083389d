"""Stale operations rolled back, and the garbage list the collector works through."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.skystore.locator.versions import garbage_of
from services.skystore.schemas import Garbage, PhysicalBucket
from services.skystore.states import State
from services.skystore.tables import buckets, locators, objects, physical_buckets

__all__ = ["forget_buckets", "forget_garbage", "garbage", "roll_back_stale", "stale_buckets"]


async def roll_back_stale(
    session: AsyncSession, *, uploads_before: datetime, multipart_before: datetime
) -> int:
    """Pending writes started before the cut-offs become garbage (never ready); returns how many.

    Pending bucket creations started before `uploads_before` are rolled back as well.
    """
    stale = sa.or_(
        sa.and_(objects.c.upload_id.is_(None), objects.c.started < uploads_before),
        sa.and_(objects.c.upload_id.is_not(None), objects.c.started < multipart_before),
    )
    result = await session.execute(
        sa.update(objects)
        .where(objects.c.status == State.PENDING, stale)
        .values(status=State.PENDING_DELETION)
        .returning(objects.c.id)
    )
    ids = list(result.scalars())
    if ids:
        await session.execute(
            sa.update(locators)
            .where(locators.c.object_id.in_(ids))
            .values(status=State.PENDING_DELETION)
        )
    # Replicas of written versions (listed, or retired while being copied) whose copier never
    # finished; the copies of pending uploads go with their upload above.
    replicas = await session.execute(
        sa.update(locators)
        .where(locators.c.status == State.PENDING, locators.c.created < uploads_before)
        .where(
            sa.exists().where(
                objects.c.id == locators.c.object_id, objects.c.status != State.PENDING
            )
        )
        .values(status=State.PENDING_DELETION)
    )
    created = await session.execute(
        sa.update(buckets)
        .where(buckets.c.status == State.PENDING, buckets.c.created < uploads_before)
        .values(status=State.PENDING_DELETION)
        .returning(buckets.c.id)
    )
    bucket_ids = list(created.scalars())
    if bucket_ids:
        await session.execute(
            sa.update(physical_buckets)
            .where(physical_buckets.c.bucket_id.in_(bucket_ids))
            .values(status=State.PENDING_DELETION)
        )
    return len(ids) + len(bucket_ids) + replicas.rowcount  # type: ignore[attr-defined]


async def garbage(session: AsyncSession, *, limit: int = 500) -> list[Garbage]:
    """Physical copies waiting for removal."""
    result = await session.execute(
        sa.select(locators)
        .where(locators.c.status == State.PENDING_DELETION)
        .order_by(locators.c.id)
        .limit(limit)
    )
    return [garbage_of(row) for row in result]


async def forget_garbage(session: AsyncSession, *, locator_ids: list[int]) -> None:
    """The copies are physically gone: drop them, and versions left with no copy at all."""
    if not locator_ids:
        return
    await session.execute(
        sa.delete(locators).where(
            locators.c.id.in_(locator_ids), locators.c.status == State.PENDING_DELETION
        )
    )
    orphan = ~sa.exists().where(locators.c.object_id == objects.c.id)
    await session.execute(
        sa.delete(objects).where(objects.c.status == State.PENDING_DELETION, orphan)
    )


async def stale_buckets(session: AsyncSession) -> dict[str, list[PhysicalBucket]]:
    """Buckets being deleted or rolled back, by name, with the physical buckets to remove."""
    result = await session.execute(
        sa.select(buckets.c.name, physical_buckets.c.region, physical_buckets.c.name.label("pname"))
        .join(physical_buckets, physical_buckets.c.bucket_id == buckets.c.id)
        .where(buckets.c.status == State.PENDING_DELETION)
    )
    found: dict[str, list[PhysicalBucket]] = {}
    for row in result:
        found.setdefault(row.name, []).append(
            PhysicalBucket(region=row.region, name=row.pname, status=State.PENDING_DELETION)
        )
    return found


async def forget_buckets(session: AsyncSession, *, names: list[str]) -> None:
    await session.execute(
        sa.delete(buckets).where(
            buckets.c.name.in_(names), buckets.c.status == State.PENDING_DELETION
        )
    )
