"""Object versions as the wire models (rows to Locator, ObjectInfo and Garbage), and the listed
version of a key with its copies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.errors import NotFound
from services.skystore.locator.buckets import get_bucket
from services.skystore.schemas import Garbage, Locator, ObjectInfo
from services.skystore.states import State
from services.skystore.tables import buckets, locators, objects

__all__ = [
    "OBJECT_QUERY",
    "garbage_of",
    "get_object",
    "locator_of",
    "object_from_copy_rows",
    "object_from_row",
    "object_info",
]


def locator_of(row: sa.Row[Any]) -> Locator:
    return Locator(
        id=row.id,
        region=row.region,
        physical_bucket=row.physical_bucket,
        physical_key=row.physical_key,
        physical_upload_id=row.physical_upload_id,
        status=row.status,
        is_base=row.is_base,
        last_access=row.last_access,
        layout=row.layout,
    )


def object_from_row(row: sa.Row[Any], bucket: str, copies: Sequence[Locator] = ()) -> ObjectInfo:
    return ObjectInfo(
        id=row.id,
        uid=row.uid,
        bucket=bucket,
        key=row.key,
        generation=row.generation,
        status=row.status,
        owner=row.owner,
        size=row.size,
        etag=row.etag,
        content_type=row.content_type,
        metadata=row.metadata,
        upload_id=row.upload_id,
        started=row.started,
        last_modified=row.last_modified,
        checksum=row.checksum,
        locators=list(copies),
    )


async def object_info(session: AsyncSession, row: sa.Row[Any], bucket: str) -> ObjectInfo:
    """The object of `row` with its copies."""
    result = await session.execute(
        sa.select(locators).where(locators.c.object_id == row.id).order_by(locators.c.region)
    )
    return object_from_row(row, bucket, [locator_of(r) for r in result])


def _no_such_key(key: str) -> NotFound:
    return NotFound(f"key {key!r} does not exist", code="NoSuchKey", detail={"Key": key})


def _object_query() -> sa.Select[Any]:
    copy = locators.alias("copy")
    return (
        sa.select(objects, *[c.label(f"copy_{c.name}") for c in copy.c])
        .join(buckets, buckets.c.id == objects.c.bucket_id)
        .outerjoin(copy, copy.c.object_id == objects.c.id)
        .where(
            buckets.c.name == sa.bindparam("bucket"),
            buckets.c.status == State.READY,
            objects.c.key == sa.bindparam("key"),
            objects.c.status == State.READY,
        )
        .order_by(copy.c.region)
    )


# The listed version of :bucket/:key joined with its copies, one row per copy. Built once:
# it is behind every proxy GET and HEAD that misses its record cache.
OBJECT_QUERY = _object_query()


def object_from_copy_rows(rows: Sequence[sa.Row[Any]], bucket: str) -> ObjectInfo:
    """The ObjectInfo of OBJECT_QUERY's rows (at least one)."""
    copies = [
        Locator(
            id=r.copy_id,
            region=r.copy_region,
            physical_bucket=r.copy_physical_bucket,
            physical_key=r.copy_physical_key,
            physical_upload_id=r.copy_physical_upload_id,
            status=r.copy_status,
            is_base=r.copy_is_base,
            last_access=r.copy_last_access,
            layout=r.copy_layout,
        )
        for r in rows
        if r.copy_id is not None
    ]
    return object_from_row(rows[0], bucket, copies)


async def get_object(session: AsyncSession, *, bucket: str, key: str) -> ObjectInfo:
    """The listed version of bucket/key with its copies, else NoSuchKey (or NoSuchBucket).

    One query on a hit: this lookup is on the path of every GET and HEAD.
    """
    rows = (await session.execute(OBJECT_QUERY, {"bucket": bucket, "key": key})).all()
    if not rows:
        await get_bucket(session, bucket)  # NoSuchBucket if that is what is missing
        raise _no_such_key(key)
    return object_from_copy_rows(rows, bucket)


def garbage_of(row: sa.Row[Any]) -> Garbage:
    return Garbage(
        locator_id=row.id,
        object_id=row.object_id,
        region=row.region,
        physical_bucket=row.physical_bucket,
        physical_key=row.physical_key,
        physical_upload_id=row.physical_upload_id,
    )
