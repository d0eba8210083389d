"""The push worker's event handler, on SQLite and PostgreSQL: it plans each missing copy once,
whatever the redeliveries, and nothing for other policies or replaced generations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicekit.cloudevents import CloudEvent
from servicekit.inbox import consume_once, inbox_events
from servicekit.outbox import outbox_events
from services.skystore.locator import buckets, reaper, replicas, versions, writes
from services.skystore.locator.collector import INBOX_KEEP, Collector
from services.skystore.locator.push import CREATED, PushWorker
from services.skystore.locator.registry import put_region
from services.skystore.locator.replication import Replicator
from services.skystore.schemas import BucketCreate, Region, UploadComplete, UploadStart

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
EDGE, CLOUD = "local:edge", "local:cloud"


@pytest.fixture
async def worker(sessions: Sessions) -> PushWorker:
    async with sessions.begin() as session:
        for name in (EDGE, CLOUD):
            region = Region(name=name, endpoint="http://127.0.0.1:1", credentials="env:X")
            await put_region(session, region=region, now=T0)
        for name, policy in (("pushed", "push"), ("local", "write_local")):
            request = BucketCreate(
                name=name, owner="user/a", regions=[EDGE, CLOUD], base_region=EDGE, policy=policy
            )
            await buckets.start_create_bucket(
                session, request=request, default_policy="write_local", now=T0
            )
            await buckets.complete_create_bucket(session, name=name)
    # Workers are not started: the test looks at what the handler plans, not at copies.
    return PushWorker(sessions, Replicator(sessions), consumer="test-push", clock=lambda: T0)


async def _put(sessions: Sessions, bucket: str) -> int:
    async with sessions.begin() as session:
        started = await writes.start_upload(
            session,
            request=UploadStart(
                bucket=bucket, key="k", owner="user/a", regions=[EDGE], base_region=EDGE
            ),
            now=T0,
        )
        done = UploadComplete(size=1, etag="e", regions=[EDGE])
        committed = await writes.complete_upload(session, object_id=started.id, done=done, now=T0)
    assert committed.object.generation is not None
    return committed.object.generation


def _event(bucket: str, generation: int) -> CloudEvent:
    return CloudEvent(
        type=CREATED,
        source="/skystore/locator",
        data={"bucket": bucket, "key": "k", "generation": generation},
    )


async def _copies(sessions: Sessions, bucket: str) -> set[tuple[str, str]]:
    async with sessions() as session:
        info = await versions.get_object(session, bucket=bucket, key="k")
    return {(c.region, c.status) for c in info.locators}


async def test_a_created_event_starts_the_missing_copy_once(worker, sessions) -> None:
    event = _event("pushed", await _put(sessions, "pushed"))
    await worker.on_created(event)
    assert await _copies(sessions, "pushed") == {(EDGE, "ready"), (CLOUD, "pending")}
    await worker.on_created(event)  # redelivered: the inbox has it
    await worker.on_created(_event("pushed", 1))  # another event, same version: nothing missing
    assert await _copies(sessions, "pushed") == {(EDGE, "ready"), (CLOUD, "pending")}


async def test_other_policies_and_replaced_generations_plan_nothing(worker, sessions) -> None:
    await worker.on_created(_event("local", await _put(sessions, "local")))
    assert await _copies(sessions, "local") == {(EDGE, "ready")}
    first = await _put(sessions, "pushed")
    second = await _put(sessions, "pushed")
    await worker.on_created(_event("pushed", first))  # overwritten meanwhile
    assert await _copies(sessions, "pushed") == {(EDGE, "ready")}
    await worker.on_created(_event("pushed", second))
    assert await _copies(sessions, "pushed") == {(EDGE, "ready"), (CLOUD, "pending")}


async def test_the_created_event_names_the_policy_and_others_are_acked_untouched(
    worker, sessions
) -> None:
    await _put(sessions, "local")
    async with sessions() as session:
        created = sa.select(outbox_events.c.payload).where(outbox_events.c.subject == CREATED)
        (payload,) = (await session.execute(created)).scalars().all()
    announced = CloudEvent.from_json(payload)
    assert announced.data["policy"] == "write_local"
    await worker.on_created(announced)
    async with sessions() as session:
        consumed = await session.execute(sa.select(sa.func.count()).select_from(inbox_events))
    assert consumed.scalar_one() == 0  # no transaction spent on it
    assert await _copies(sessions, "local") == {(EDGE, "ready")}


async def test_an_event_without_its_fields_is_ignored(worker, sessions) -> None:
    bad = CloudEvent(type=CREATED, source="/skystore/locator", data={"bucket": "pushed"})
    await worker.on_created(bad)  # logged, acked, nothing planned


async def test_a_redelivered_event_is_not_planned_again(worker, sessions) -> None:
    event = _event("pushed", await _put(sessions, "pushed"))
    await worker.on_created(event)
    async with sessions() as session:
        info = await versions.get_object(session, bucket="pushed", key="k")
    pending = next(c for c in info.locators if c.region == CLOUD)
    async with sessions.begin() as session:  # the copy failed and its garbage is gone
        await replicas.abort_replica(session, locator_id=pending.id)
        await reaper.forget_garbage(session, locator_ids=[pending.id])
    await worker.on_created(event)  # the inbox knows this event: the sweep retries, not it
    assert await _copies(sessions, "pushed") == {(EDGE, "ready")}
    await worker.on_created(_event("pushed", info.generation or 0))  # a new event plans again
    assert await _copies(sessions, "pushed") == {(EDGE, "ready"), (CLOUD, "pending")}


async def test_the_sweep_forgets_inbox_entries_older_than_the_stream(sessions) -> None:
    async with sessions.begin() as session:
        assert await consume_once(session, "test-push", "old", clock=lambda: T0)
        recent = T0 + INBOX_KEEP - timedelta(hours=1)
        assert await consume_once(session, "test-push", "recent", clock=lambda: recent)
    collector = Collector(
        sessions,
        pending_timeout=60,
        multipart_timeout=60,
        interval=0,
        clock=lambda: T0 + INBOX_KEEP + timedelta(minutes=1),
    )
    await collector.sweep_once()
    async with sessions() as session:
        left = (await session.execute(sa.select(inbox_events.c.event_id))).scalars().all()
    assert left == ["recent"]
