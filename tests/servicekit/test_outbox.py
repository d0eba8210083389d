"""The transactional outbox (servicekit.outbox): no event lost, none delivered twice.

Real databases (SQLite and PostgreSQL), real NATS JetStream; failures are injected by
stopping the NATS server or by wrapping the publisher, never by mocking.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from servicekit.cloudevents import CloudEvent
from servicekit.db import create_engine, session_factory
from servicekit.errors import ServiceUnavailable
from servicekit.events import EventPublisher, EventSubscriber, connect_nats, ensure_stream
from servicekit.events import stream_for as stream_of
from servicekit.infra import NatsServer
from servicekit.migrate import SERVICEKIT_MIGRATIONS, SERVICEKIT_VERSION_TABLE, run_migrations
from servicekit.outbox import OutboxRelay, enqueue, outbox_events
from servicekit.testing import eventually

Sessions = async_sessionmaker[AsyncSession]


async def migrated_engine(url: str) -> AsyncEngine:
    await run_migrations(url, SERVICEKIT_MIGRATIONS, version_table=SERVICEKIT_VERSION_TABLE)
    return create_engine(url)


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[Sessions]:
    engine = await migrated_engine(database_url)
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await connect_nats(nats_url, name="test-outbox")
    yield client
    await client.close()


@pytest.fixture
async def service(nc: Client) -> AsyncIterator[str]:
    """A service of this test's own, with its stream; the stream is deleted afterwards."""
    name = f"t{uuid.uuid4().hex[:10]}"
    await ensure_stream(nc.jetstream(), name)
    yield name
    await nc.jetstream().delete_stream(stream_of(name).name)


class RecordingPublisher(EventPublisher):
    """Publishes for real and remembers every publish and whether JetStream dropped it."""

    def __init__(self, js: JetStreamContext, *, timeout: float = 5.0) -> None:
        super().__init__(js, timeout=timeout)
        self.ids: list[str] = []
        self.duplicates = 0

    async def publish_bytes(self, subject: str, payload: bytes, *, msg_id: str) -> PubAck:
        ack = await super().publish_bytes(subject, payload, msg_id=msg_id)
        self.ids.append(msg_id)
        self.duplicates += bool(ack.duplicate)
        return ack


class FreezingPublisher(RecordingPublisher):
    """Publishes `survive` events, then freezes like a relay process about to be killed."""

    def __init__(self, js: JetStreamContext, *, survive: int) -> None:
        super().__init__(js)
        self._survive = survive
        self._calls = 0
        self.frozen = asyncio.Event()

    async def publish_bytes(self, subject: str, payload: bytes, *, msg_id: str) -> PubAck:
        self._calls += 1
        if self._calls > self._survive:
            self.frozen.set()
            await asyncio.Event().wait()  # never returns: the relay is killed in here
        return await super().publish_bytes(subject, payload, msg_id=msg_id)


class Consumer:
    """A durable subscriber that records the ids of the events it is handed."""

    def __init__(self, js: JetStreamContext, service: str, durable: str = "consumer") -> None:
        self.ids: list[str] = []
        self.subscriber = EventSubscriber(
            js,
            stream=stream_of(service).name,
            durable=durable,
            filter_subject=f"{service}.>",
            handler=self._record,
        )

    async def _record(self, event: CloudEvent) -> None:
        self.ids.append(event.id)


async def commit_events(
    sessions: Sessions, service: str, count: int, relay: OutboxRelay | None = None
) -> list[str]:
    """Commit `count` state changes, each with its event; return the event ids in order."""
    ids = []
    for number in range(count):
        event = CloudEvent(type=f"{service}.thing.changed", source="/tests", data={"n": number})
        async with sessions() as session, session.begin():
            await enqueue(session, f"{service}.thing.changed", event)
        if relay is not None:
            relay.notify()
        ids.append(event.id)
    return ids


async def unpublished(sessions: Sessions) -> int:
    async with sessions() as session:
        return await session.scalar(
            sa.select(sa.func.count())
            .select_from(outbox_events)
            .where(outbox_events.c.published_at.is_(None))
        )


def all_published(sessions: Sessions) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await unpublished(sessions) == 0

    return check


async def stream_messages(js: JetStreamContext, service: str) -> int:
    return (await js.stream_info(stream_of(service).name)).state.messages


async def drain(relay: OutboxRelay) -> int:
    published = 0
    while count := await relay.relay_once():
        published += count
    return published


async def test_events_are_published_in_order_with_their_id_as_message_id(
    sessions: Sessions, nc: Client, service: str
) -> None:
    js = nc.jetstream()
    ids = await commit_events(sessions, service, 10)
    assert await drain(OutboxRelay(sessions, EventPublisher(js))) == 10
    stored = [await js.get_msg(stream_of(service).name, seq) for seq in range(1, 11)]
    assert [message.headers["Nats-Msg-Id"] for message in stored] == ids
    assert [CloudEvent.from_json(message.data).id for message in stored] == ids
    async with sessions() as session:
        rows = (await session.execute(sa.select(outbox_events))).all()
    assert all(row.published_at is not None and row.attempts == 0 for row in rows)
    assert await unpublished(sessions) == 0


async def test_a_rolled_back_transactions_events_are_never_published(
    sessions: Sessions, nc: Client, service: str
) -> None:
    doomed = CloudEvent(type="t", source="/tests", data={"doomed": True})
    with pytest.raises(RuntimeError):
        async with sessions() as session, session.begin():
            await enqueue(session, f"{service}.thing.changed", doomed)
            raise RuntimeError("the state change fails after the event was enqueued")
    kept = await commit_events(sessions, service, 1)
    recorder = RecordingPublisher(nc.jetstream())
    assert await drain(OutboxRelay(sessions, recorder)) == 1
    assert recorder.ids == kept
    assert await stream_messages(nc.jetstream(), service) == 1


async def test_an_event_nats_refuses_is_kept_with_its_error_and_retried(
    sessions: Sessions, nc: Client, service: str
) -> None:
    js = nc.jetstream()
    homeless = f"h{uuid.uuid4().hex[:10]}"  # no stream takes its subjects yet
    before = await commit_events(sessions, service, 2)
    refused = await commit_events(sessions, homeless, 1)
    after = await commit_events(sessions, service, 2)
    recorder = RecordingPublisher(js, timeout=1)
    relay = OutboxRelay(sessions, recorder)
    with pytest.raises(ServiceUnavailable, match=f"publish to {homeless}"):
        await relay.relay_once()
    assert recorder.ids == before + after  # the others were not held back
    async with sessions() as session:
        row = (
            await session.execute(
                sa.select(outbox_events).where(outbox_events.c.published_at.is_(None))
            )
        ).one()
    assert (row.id, row.attempts) == (refused[0], 1)
    assert "no response from stream" in row.last_error

    await ensure_stream(js, homeless)
    try:
        assert await relay.relay_once() == 1
    finally:
        await js.delete_stream(stream_of(homeless).name)
    assert await unpublished(sessions) == 0


async def test_a_refused_event_does_not_hold_back_the_events_after_it(
    sessions: Sessions, nc: Client, service: str
) -> None:
    homeless = f"h{uuid.uuid4().hex[:10]}"  # no stream takes its subjects
    await commit_events(sessions, homeless, 1)
    recorder = RecordingPublisher(nc.jetstream(), timeout=1)
    relay = OutboxRelay(sessions, recorder, poll_interval=3600, backoff=3600, backoff_cap=3600)
    await relay.start()
    try:
        published: list[str] = []
        for _ in range(3):
            published.extend(await commit_events(sessions, service, 1, relay))
            await eventually(lambda: recorder.ids == published, within=5)
    finally:
        await relay.stop()
    assert await unpublished(sessions) == 1


async def test_events_enqueued_while_nats_is_down_arrive_once_in_order_after_it_returns(
    sessions: Sessions, nats_server: NatsServer
) -> None:
    client = await connect_nats(nats_server.url, name="test-outage", reconnect_wait=0.1)
    js = client.jetstream()
    await ensure_stream(js, "outage")
    consumer = Consumer(js, "outage")
    await consumer.subscriber.start()
    relay = OutboxRelay(
        sessions,
        EventPublisher(js, timeout=0.3),
        poll_interval=0.05,
        backoff=0.05,
        backoff_cap=0.2,
    )
    await relay.start()
    try:
        nats_server.stop()
        ids = await commit_events(sessions, "outage", 50, relay)

        async def head_retried() -> bool:
            async with sessions() as session:
                head = (
                    await session.execute(sa.select(outbox_events).order_by(outbox_events.c.seq))
                ).first()
            return head.attempts >= 2 and "NATS" in (head.last_error or "")

        await eventually(head_retried)
        assert await unpublished(sessions) == 50

        nats_server.start()
        await eventually(lambda: len(consumer.ids) >= 50, within=30)
        await eventually(all_published(sessions))
        assert consumer.ids == ids
        assert await stream_messages(js, "outage") == 50
    finally:
        await relay.stop()
        await consumer.subscriber.stop()
        await client.close()


async def test_no_event_is_lost_or_delivered_twice_when_the_relay_dies_mid_batch(
    sessions: Sessions, nc: Client, service: str
) -> None:
    js = nc.jetstream()
    ids = await commit_events(sessions, service, 300)
    consumer = Consumer(js, service)
    await consumer.subscriber.start()
    try:
        # The first relay takes batches of 100: it marks the first batch, publishes half of
        # the second, and is killed before it can mark them.
        dying = FreezingPublisher(js, survive=150)
        first = OutboxRelay(sessions, dying, batch_size=100)
        await first.start()
        await asyncio.wait_for(dying.frozen.wait(), 20)
        await eventually(lambda: len(dying.ids) == 150)
        await first.stop(grace=0)
        assert await unpublished(sessions) == 200
        assert await stream_messages(js, service) == 150

        recorder = RecordingPublisher(js)
        second = OutboxRelay(sessions, recorder, batch_size=100, poll_interval=0.05)
        await second.start()
        try:
            await eventually(all_published(sessions))
        finally:
            await second.stop()
        # The 50 published-but-unmarked events went out again; JetStream dropped them.
        assert (len(recorder.ids), recorder.duplicates) == (200, 50)
        assert await stream_messages(js, service) == 300
        await eventually(lambda: len(consumer.ids) == 300)
    finally:
        await consumer.subscriber.stop()
    assert consumer.ids == ids


async def test_two_relays_on_postgres_never_publish_a_row_twice(
    pg_database_url: str, nc: Client, service: str
) -> None:
    js = nc.jetstream()
    engines = [await migrated_engine(pg_database_url) for _ in range(2)]
    try:
        replicas = [session_factory(engine) for engine in engines]
        ids = await commit_events(replicas[0], service, 1000)
        recorders = [RecordingPublisher(js) for _ in replicas]
        relays = [
            OutboxRelay(sessions, recorder, batch_size=25, poll_interval=0.05)
            for sessions, recorder in zip(replicas, recorders, strict=True)
        ]
        try:
            for relay in relays:
                await relay.start()
            await eventually(all_published(replicas[0]), within=60)
        finally:
            for relay in relays:
                await relay.stop()
    finally:
        for engine in engines:
            await engine.dispose()
    published = recorders[0].ids + recorders[1].ids
    assert all(recorder.ids for recorder in recorders), "both relays took part"
    assert sorted(published) == sorted(ids)  # every event once, none twice
    assert recorders[0].duplicates + recorders[1].duplicates == 0
    assert await stream_messages(js, service) == 1000


async def test_notify_wakes_the_relay_long_before_its_poll_interval(
    sessions: Sessions, nc: Client, service: str
) -> None:
    recorder = RecordingPublisher(nc.jetstream())
    relay = OutboxRelay(sessions, recorder, poll_interval=3600)
    first = await commit_events(sessions, service, 1)
    await relay.start()
    try:
        # Once the first event is out, the relay's first pass is over: only notify() or an
        # hour-long poll can publish the next one.
        await eventually(lambda: recorder.ids == first)
        second = await commit_events(sessions, service, 1, relay)
        await eventually(lambda: recorder.ids == first + second, within=5)
    finally:
        await relay.stop()


async def test_the_poll_interval_publishes_events_nobody_notified(
    sessions: Sessions, nc: Client, service: str
) -> None:
    recorder = RecordingPublisher(nc.jetstream())
    relay = OutboxRelay(sessions, recorder, poll_interval=0.05)
    await relay.start()
    try:
        ids = await commit_events(sessions, service, 3)
        await eventually(lambda: recorder.ids == ids)
    finally:
        await relay.stop()


async def test_purge_deletes_only_events_published_long_enough_ago(
    sessions: Sessions, nc: Client, service: str
) -> None:
    now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    clock = [now]
    relay = OutboxRelay(
        sessions, EventPublisher(nc.jetstream()), batch_size=2, clock=lambda: clock[0]
    )
    await commit_events(sessions, service, 3)
    assert await relay.relay_once() == 2
    clock[0] = now + timedelta(hours=2)
    assert await relay.purge_published(timedelta(hours=3)) == 0
    assert await relay.purge_published(timedelta(hours=1)) == 2
    async with sessions() as session:
        left = await session.scalar(sa.select(sa.func.count()).select_from(outbox_events))
    assert left == 1 == await unpublished(sessions)


@pytest.mark.parametrize("subject", ["", "catalog.*", "catalog.>", "catalog..x", "a b"])
async def test_enqueue_refuses_subjects_one_cannot_publish_to(
    sessions: Sessions, subject: str
) -> None:
    event = CloudEvent(type="t", source="/tests", data=None)
    async with sessions() as session, session.begin():
        with pytest.raises(ValueError, match="is not a NATS subject"):
            await enqueue(session, subject, event)


async def test_stopping_a_relay_that_never_started_does_nothing(
    sessions: Sessions, nc: Client
) -> None:
    await OutboxRelay(sessions, EventPublisher(nc.jetstream())).stop()
