"""Writes to a key through the two-phase protocol: an upload (PUT, copy, multipart) starts
(pending rows), then completes or is rolled back; a delete retires the listed version at once.

Physical names are unique per operation, so writers never touch each other's bytes: an object
version gets its own physical key. Commits to one key are put in order by its row in
`skystore_key_heads`; the commit order is the generation order, and the partial unique index on
ready objects keeps a key listed once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.errors import InvalidInput, NotFound
from services.skystore.locator import events
from services.skystore.locator.buckets import get_bucket
from services.skystore.locator.versions import garbage_of, locator_of, object_from_row, object_info
from services.skystore.schemas import (
    Committed,
    Garbage,
    Locator,
    ObjectInfo,
    UploadComplete,
    UploadStart,
)
from services.skystore.states import State, check_transition
from services.skystore.tables import buckets, key_heads, locators, objects

__all__ = [
    "abort_upload",
    "complete_upload",
    "get_upload",
    "list_uploads",
    "set_physical_upload",
    "start_delete_object",
    "start_upload",
]


def _by_region(copy: Locator) -> str:
    return copy.region


async def get_upload(session: AsyncSession, *, bucket: str, upload_id: str) -> ObjectInfo:
    """The pending multipart upload `upload_id` of `bucket`, else NoSuchUpload."""
    found = await get_bucket(session, bucket)
    result = await session.execute(
        sa.select(objects).where(
            objects.c.bucket_id == found.id,
            objects.c.upload_id == upload_id,
            objects.c.status == State.PENDING,
        )
    )
    row = result.first()
    if row is None:
        raise NotFound(
            f"multipart upload {upload_id!r} does not exist (finished, aborted or expired)",
            code="NoSuchUpload",
            detail={"UploadId": upload_id},
        )
    return await object_info(session, row, bucket)


async def start_upload(session: AsyncSession, *, request: UploadStart, now: datetime) -> ObjectInfo:
    """Phase one of a write (PUT, copy, multipart): a pending version with pending copies.

    Nothing lists it; the current version, if any, stays readable until the commit.
    """
    found = await get_bucket(session, request.bucket)
    wanted = list(dict.fromkeys(request.regions))
    missing = [r for r in wanted if found.physical_in(r) is None]
    if missing:
        raise InvalidInput(
            f"bucket {request.bucket!r} has no physical bucket in {', '.join(missing)}",
            detail={"regions": missing},
        )
    uid = uuid.uuid4().hex
    result = await session.execute(
        sa.insert(objects)
        .values(
            uid=uid,
            bucket_id=found.id,
            key=request.key,
            status=State.PENDING,
            owner=request.owner,
            content_type=request.content_type,
            metadata=request.metadata,
            upload_id=uuid.uuid4().hex if request.multipart else None,
            started=now,
        )
        .returning(objects)
    )
    row = result.one()
    copies = await session.execute(
        sa.insert(locators).returning(locators, sort_by_parameter_order=True),
        [
            {
                "object_id": row.id,
                "region": region,
                "physical_bucket": found.physical_in(region).name,  # type: ignore[union-attr]
                "physical_key": uid,
                "status": State.PENDING,
                "is_base": region == request.base_region,
                "created": now,
                "last_access": now,
            }
            for region in sorted(wanted)
        ],
    )
    return object_from_row(row, request.bucket, [locator_of(c) for c in copies])


async def set_physical_upload(
    session: AsyncSession, *, object_id: int, region: str, physical_upload_id: str
) -> None:
    """Record the region's own multipart upload id for the pending copy there."""
    await session.execute(
        sa.update(locators)
        .where(
            locators.c.object_id == object_id,
            locators.c.region == region,
            locators.c.status == State.PENDING,
        )
        .values(physical_upload_id=physical_upload_id)
    )


async def _next_generation(session: AsyncSession, bucket_id: int, key: str) -> int:
    # The first statement of the commit is this write: on PostgreSQL it takes the key's row
    # lock, on SQLite the database's write lock, before anything is read for the commit.
    insert = postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert
    statement = insert(key_heads).values(bucket_id=bucket_id, key=key, generation=1)
    statement = statement.on_conflict_do_update(
        index_elements=[key_heads.c.bucket_id, key_heads.c.key],
        set_={"generation": key_heads.c.generation + 1},
    ).returning(key_heads.c.generation)
    return int((await session.execute(statement)).scalar_one())


async def _retire_current(session: AsyncSession, bucket_id: int, key: str) -> list[Garbage]:
    """The listed version of the key, if any, becomes garbage (its copies too)."""
    result = await session.execute(
        sa.update(objects)
        .where(
            objects.c.bucket_id == bucket_id, objects.c.key == key, objects.c.status == State.READY
        )
        .values(status=State.PENDING_DELETION)
        .returning(objects.c.id)
    )
    retired = list(result.scalars())
    return await _retire(session, retired) if retired else []


async def _pending_row(session: AsyncSession, object_id: int) -> sa.Row[Any]:
    row = (await session.execute(sa.select(objects).where(objects.c.id == object_id))).first()
    if row is None:
        raise NotFound(f"upload {object_id} does not exist", code="NoSuchUpload")
    return row


async def complete_upload(
    session: AsyncSession, *, object_id: int, done: UploadComplete, now: datetime
) -> ObjectInfo:
    """Phase two: the bytes are in place; this version becomes the listed one.

    Last writer wins by commit order: the version listed before becomes garbage.
    """
    row = await _pending_row(session, object_id)
    generation = await _next_generation(session, row.bucket_id, row.key)
    # Re-read under the lock: the reaper may have rolled this upload back meanwhile.
    current = (
        await session.execute(
            sa.select(objects.c.status).where(objects.c.id == object_id).with_for_update()
        )
    ).scalar_one()
    if current != State.PENDING:
        raise NotFound(
            f"upload of {row.key!r} is {current}: it was finished, aborted or rolled back",
            code="NoSuchUpload",
            detail={"Key": row.key},
        )
    check_transition(f"upload of {row.key!r}", current, State.READY)
    retired = await _retire_current(session, row.bucket_id, row.key)
    row = (
        await session.execute(
            sa.update(objects)
            .where(objects.c.id == object_id)
            .values(
                status=State.READY,
                generation=generation,
                size=done.size,
                etag=done.etag,
                checksum=done.checksum,
                last_modified=now,
            )
            .returning(objects)
        )
    ).one()
    written = sorted(set(done.regions))
    layouts = {region: done.layouts[region] for region in written if region in done.layouts}
    laid_out = (
        {"layout": sa.case(*((locators.c.region == r, v) for r, v in layouts.items()))}
        if layouts
        else {}
    )
    copies = (
        await session.execute(
            sa.update(locators)
            .where(locators.c.object_id == object_id)
            .values(
                status=sa.case(
                    (locators.c.region.in_(written), State.READY.value),
                    else_=State.PENDING_DELETION.value,
                ),
                last_access=now,
                physical_upload_id=None,
                **laid_out,
            )
            .returning(locators)
        )
    ).all()
    if not any(c.status == State.READY for c in copies):
        raise InvalidInput(f"none of {written} holds a copy of this upload")
    bucket, placement = (
        await session.execute(
            sa.select(buckets.c.name, buckets.c.policy).where(buckets.c.id == row.bucket_id)
        )
    ).one()
    info = object_from_row(row, bucket, sorted(map(locator_of, copies), key=_by_region))
    await events.announce(
        session,
        "created",
        bucket=bucket,
        key=info.key,
        generation=info.generation,
        size=info.size,
        etag=info.etag,
        regions=sorted(written),
        policy=placement,
    )
    return Committed(object=info, retired=retired)


async def abort_upload(session: AsyncSession, *, object_id: int) -> list[Garbage]:
    """Roll back a pending upload: its copies become garbage to remove."""
    row = await _pending_row(session, object_id)
    check_transition(f"upload of {row.key!r}", row.status, State.PENDING_DELETION)
    return await _retire(session, [object_id], listed=False)


async def _retire(
    session: AsyncSession, object_ids: Sequence[int], *, listed: bool = True
) -> list[Garbage]:
    """The versions become garbage with their copies. Of a `listed` version (overwritten or
    deleted), a replica still being copied (pending) is left to its copier: removed now, it
    would be written again after the removal and stay behind unknown. Completing it then makes
    it garbage (replicas.complete_replica), and a copier that never finishes is rolled back."""
    await session.execute(
        sa.update(objects).where(objects.c.id.in_(object_ids)).values(status=State.PENDING_DELETION)
    )
    copies = locators.c.object_id.in_(object_ids)
    if listed:
        copies = sa.and_(copies, locators.c.status != State.PENDING)
    await session.execute(sa.update(locators).where(copies).values(status=State.PENDING_DELETION))
    result = await session.execute(sa.select(locators).where(copies))
    return [garbage_of(r) for r in result]


async def start_delete_object(
    session: AsyncSession, *, bucket: str, key: str
) -> tuple[int, list[Garbage]]:
    """DeleteObject: the key stops being listed now; (the delete's generation, the copies
    that are now garbage to remove).

    Deleting a missing key is no error (S3 answers 204); it still takes a generation, so a
    delete is ordered against concurrent writes like any commit.
    """
    found = await get_bucket(session, bucket)
    generation = await _next_generation(session, found.id, key)
    result = await session.execute(
        sa.select(objects.c.id).where(
            objects.c.bucket_id == found.id, objects.c.key == key, objects.c.status == State.READY
        )
    )
    ids = list(result.scalars())
    if not ids:
        return generation, []
    await events.announce(session, "deleted", bucket=bucket, key=key)
    return generation, await _retire(session, ids)


async def list_uploads(
    session: AsyncSession, *, bucket: str, prefix: str = "", limit: int = 1000
) -> list[ObjectInfo]:
    """Multipart uploads under way in `bucket`, by key then start time."""
    found = await get_bucket(session, bucket)
    result = await session.execute(
        sa.select(objects)
        .where(
            objects.c.bucket_id == found.id,
            objects.c.status == State.PENDING,
            objects.c.upload_id.is_not(None),
            objects.c.key.startswith(prefix, autoescape=True),
        )
        .order_by(objects.c.key, objects.c.started)
        .limit(limit)
    )
    return [object_from_row(row, bucket) for row in result]
