"""The two-phase protocol: every mutation starts (pending rows), then completes or is rolled back.

Physical names are unique per operation, so writers never touch each other's bytes: a logical
bucket gets its own physical bucket in each region, an object version its own physical key.
Commits to one key are put in order by its row in `skystore_key_heads`; the commit order is the
generation order, and the partial unique index on ready objects keeps a key listed once.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.errors import Conflict, InvalidInput, NotFound
from services.skystore.locator import events
from services.skystore.policies import policy as placement_policy
from services.skystore.schemas import (
    Bucket,
    BucketCreate,
    BucketEviction,
    Committed,
    Garbage,
    Locator,
    ObjectInfo,
    PhysicalBucket,
    UploadComplete,
    UploadStart,
)
from services.skystore.states import State, check_transition
from services.skystore.tables import (
    buckets,
    key_heads,
    locators,
    objects,
    physical_buckets,
    regions,
)

__all__ = [
    "abort_upload",
    "check_bucket_name",
    "complete_create_bucket",
    "complete_delete_bucket",
    "complete_upload",
    "get_bucket",
    "get_object",
    "get_upload",
    "list_buckets",
    "list_uploads",
    "set_policy",
    "start_create_bucket",
    "start_delete_bucket",
    "start_delete_object",
    "start_upload",
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


def _by_region(copy: Locator) -> str:
    return copy.region


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


def object_query(bucket: str, key: str) -> sa.Select[Any]:
    """The listed version of bucket/key joined with its copies: one row per copy."""
    copy = locators.alias("copy")
    return (
        sa.select(objects, *[c.label(f"copy_{c.name}") for c in copy.c])
        .join(buckets, buckets.c.id == objects.c.bucket_id)
        .outerjoin(copy, copy.c.object_id == objects.c.id)
        .where(
            buckets.c.name == bucket,
            buckets.c.status == State.READY,
            objects.c.key == key,
            objects.c.status == State.READY,
        )
        .order_by(copy.c.region)
    )


def object_from_copy_rows(rows: Sequence[sa.Row[Any]], bucket: str) -> ObjectInfo:
    """The ObjectInfo of `object_query`'s rows (at least one)."""
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
        )
        for r in rows
        if r.copy_id is not None
    ]
    return object_from_row(rows[0], bucket, copies)


async def get_object(session: AsyncSession, *, bucket: str, key: str) -> ObjectInfo:
    """The listed version of bucket/key with its copies, else NoSuchKey (or NoSuchBucket).

    One query on a hit: this lookup is on the path of every GET and HEAD.
    """
    rows = (await session.execute(object_query(bucket, key))).all()
    if not rows:
        await get_bucket(session, bucket)  # NoSuchBucket if that is what is missing
        raise _no_such_key(key)
    return object_from_copy_rows(rows, bucket)


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
            )
            .returning(locators)
        )
    ).all()
    if not any(c.status == State.READY for c in copies):
        raise InvalidInput(f"none of {written} holds a copy of this upload")
    bucket = (
        await session.execute(sa.select(buckets.c.name).where(buckets.c.id == row.bucket_id))
    ).scalar_one()
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


def garbage_of(row: sa.Row[Any]) -> Garbage:
    return Garbage(
        locator_id=row.id,
        object_id=row.object_id,
        region=row.region,
        physical_bucket=row.physical_bucket,
        physical_key=row.physical_key,
        physical_upload_id=row.physical_upload_id,
    )


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
