"""Buckets through the two-phase protocol: every mutation starts (pending rows), then completes
or is rolled back.

Physical names are unique per operation, so writers never touch each other's bytes: a logical
bucket gets its own physical bucket in each region.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.errors import Conflict, InvalidInput, NotFound
from services.skystore.policies import policy as placement_policy
from services.skystore.schemas import Bucket, BucketCreate, BucketEviction, PhysicalBucket
from services.skystore.states import State, check_transition
from services.skystore.tables import buckets, objects, physical_buckets, regions

__all__ = [
    "check_bucket_name",
    "complete_create_bucket",
    "complete_delete_bucket",
    "get_bucket",
    "list_buckets",
    "ready_bucket_id",
    "set_eviction",
    "set_policy",
    "start_create_bucket",
    "start_delete_bucket",
]

_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_ADDRESS = re.compile(r"\d+\.\d+\.\d+\.\d+")


def check_bucket_name(name: str) -> None:
    """S3's rules for bucket names; InvalidBucketName otherwise."""
    if (
        not _BUCKET_NAME.fullmatch(name)
        or ".." in name
        or ".-" in name
        or "-." in name
        or _IP_ADDRESS.fullmatch(name)
    ):
        raise InvalidInput(
            f"bucket name {name!r} is not valid: 3-63 characters of a-z, 0-9, '.' and '-', "
            "starting and ending with a letter or digit",
            code="InvalidBucketName",
            detail={"BucketName": name},
        )


def _physical_name(name: str) -> str:
    stem = name[:46].rstrip(".-")
    return f"{stem}-{secrets.token_hex(8)}"


async def _bucket_row(session: AsyncSession, name: str) -> sa.Row[Any] | None:
    result = await session.execute(sa.select(buckets).where(buckets.c.name == name))
    return result.first()


async def _bucket(session: AsyncSession, row: sa.Row[Any]) -> Bucket:
    result = await session.execute(
        sa.select(physical_buckets.c.region, physical_buckets.c.name, physical_buckets.c.status)
        .where(physical_buckets.c.bucket_id == row.id)
        .order_by(physical_buckets.c.region)
    )
    physical = [PhysicalBucket(region=r.region, name=r.name, status=r.status) for r in result]
    return Bucket(
        id=row.id,
        name=row.name,
        owner=row.owner,
        acl=row.acl,
        policy=row.policy,
        eviction=BucketEviction(eviction=row.eviction, replica_ttl=row.replica_ttl),
        base_region=row.base_region,
        status=row.status,
        created=row.created,
        physical=physical,
    )


def _no_such_bucket(name: str) -> NotFound:
    return NotFound(
        f"bucket {name!r} does not exist", code="NoSuchBucket", detail={"BucketName": name}
    )


async def get_bucket(session: AsyncSession, name: str) -> Bucket:
    """The ready bucket `name`, else NoSuchBucket."""
    row = await _bucket_row(session, name)
    if row is None or row.status != State.READY:
        raise _no_such_bucket(name)
    return await _bucket(session, row)


async def ready_bucket_id(session: AsyncSession, name: str) -> int:
    """The id of the ready bucket `name`, else NoSuchBucket: one query, for a listing."""
    row = (
        await session.execute(
            sa.select(buckets.c.id, buckets.c.status).where(buckets.c.name == name)
        )
    ).first()
    if row is None or row.status != State.READY:
        raise _no_such_bucket(name)
    return int(row.id)


async def list_buckets(session: AsyncSession, *, owner: str | None = None) -> list[Bucket]:
    query = sa.select(buckets).where(buckets.c.status == State.READY).order_by(buckets.c.name)
    if owner is not None:
        query = query.where(buckets.c.owner == owner)
    rows = (await session.execute(query)).all()
    return [await _bucket(session, row) for row in rows]


async def _check_regions(session: AsyncSession, names: Sequence[str]) -> None:
    result = await session.execute(sa.select(regions.c.name).where(regions.c.name.in_(names)))
    unknown = set(names) - set(result.scalars())
    if unknown:
        raise InvalidInput(
            f"unknown region(s): {', '.join(sorted(unknown))}", detail={"regions": sorted(unknown)}
        )


async def start_create_bucket(
    session: AsyncSession, *, request: BucketCreate, default_policy: str, now: datetime
) -> Bucket:
    """Phase one: a pending bucket with a pending physical bucket in each region asked for."""
    check_bucket_name(request.name)
    placement_policy(request.policy or default_policy)
    wanted = list(dict.fromkeys([request.base_region, *request.regions]))
    await _check_regions(session, wanted)
    existing = await _bucket_row(session, request.name)
    if existing is not None:
        if existing.status != State.READY:
            raise Conflict(
                f"bucket {request.name!r} is being created or deleted; try again",
                code="OperationAborted",
                detail={"BucketName": request.name},
            )
        if existing.owner == request.owner:
            raise Conflict(
                f"you already own bucket {request.name!r}",
                code="BucketAlreadyOwnedByYou",
                detail={"BucketName": request.name},
            )
        raise Conflict(
            f"bucket name {request.name!r} is taken",
            code="BucketAlreadyExists",
            detail={"BucketName": request.name},
        )
    result = await session.execute(
        sa.insert(buckets)
        .values(
            name=request.name,
            owner=request.owner,
            acl=request.acl,
            policy=request.policy or default_policy,
            eviction=request.eviction.eviction,
            replica_ttl=request.eviction.replica_ttl,
            base_region=request.base_region,
            status=State.PENDING,
            created=now,
        )
        .returning(buckets.c.id)
    )
    bucket_id = result.scalar_one()
    await session.execute(
        sa.insert(physical_buckets),
        [
            {
                "bucket_id": bucket_id,
                "region": region,
                "name": _physical_name(request.name),
                "status": State.PENDING,
            }
            for region in wanted
        ],
    )
    row = (await session.execute(sa.select(buckets).where(buckets.c.id == bucket_id))).one()
    return await _bucket(session, row)


async def _move_bucket(session: AsyncSession, name: str, source: State, target: State) -> int:
    row = await _bucket_row(session, name)
    if row is None:
        raise _no_such_bucket(name)
    check_transition(f"bucket {name!r}", row.status, target)
    if row.status != source:
        raise Conflict(f"bucket {name!r} is {row.status}", code="OperationAborted")
    result = await session.execute(
        sa.update(buckets)
        .where(buckets.c.id == row.id, buckets.c.status == source)
        .values(status=target)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"bucket {name!r} changed meanwhile; try again", code="OperationAborted")
    await session.execute(
        sa.update(physical_buckets)
        .where(physical_buckets.c.bucket_id == row.id)
        .values(status=target)
    )
    return int(row.id)


async def set_policy(session: AsyncSession, *, name: str, policy: str) -> Bucket:
    """Change the bucket's placement policy; objects already written stay where they are."""
    placement_policy(policy)
    found = await get_bucket(session, name)
    await session.execute(sa.update(buckets).where(buckets.c.id == found.id).values(policy=policy))
    return await get_bucket(session, name)


async def set_eviction(session: AsyncSession, *, name: str, eviction: BucketEviction) -> Bucket:
    """Change how the bucket's evictable replicas expire (None fields: the locator's setting)."""
    found = await get_bucket(session, name)
    await session.execute(
        sa.update(buckets)
        .where(buckets.c.id == found.id)
        .values(eviction=eviction.eviction, replica_ttl=eviction.replica_ttl)
    )
    return await get_bucket(session, name)


async def complete_create_bucket(session: AsyncSession, *, name: str) -> Bucket:
    """Phase two: the physical buckets exist; the bucket becomes visible."""
    await _move_bucket(session, name, State.PENDING, State.READY)
    return await get_bucket(session, name)


async def start_delete_bucket(session: AsyncSession, *, name: str) -> Bucket:
    """Phase one of DeleteBucket: refused while any object is listed or being written."""
    row = await _bucket_row(session, name)
    if row is None or row.status != State.READY:
        raise _no_such_bucket(name)
    live = await session.execute(
        sa.select(objects.c.id)
        .where(
            objects.c.bucket_id == row.id,
            objects.c.status.in_([State.READY, State.PENDING]),
        )
        .limit(1)
    )
    if live.first() is not None:
        raise Conflict(
            f"bucket {name!r} is not empty",
            code="BucketNotEmpty",
            detail={"BucketName": name},
        )
    await _move_bucket(session, name, State.READY, State.PENDING_DELETION)
    return await _bucket(session, (await _bucket_row(session, name)))  # type: ignore[arg-type]


async def complete_delete_bucket(session: AsyncSession, *, name: str) -> None:
    """Phase two (also the roll-back of a failed create): the physical buckets are gone."""
    row = await _bucket_row(session, name)
    if row is None:
        raise _no_such_bucket(name)
    if row.status == State.READY:
        raise Conflict(f"bucket {name!r} is not being deleted", code="OperationAborted")
    await session.execute(sa.delete(buckets).where(buckets.c.id == row.id))
