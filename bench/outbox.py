"""Outbox benchmark: bare nats-py vs EventPublisher vs the outbox path on SQLite and PostgreSQL.

    python -m bench.outbox [--events 5000] [--window 256] [--producers 8]

Starts a private nats-server; PostgreSQL comes from EXTRACT_BENCH_PG_URL (a libpq URL of a
server where a throwaway database may be created) or 127.0.0.1:5432, and its rows are skipped
with a message when there is none.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import sqlalchemy as sa
from nats.js import JetStreamContext
from nats.js.api import PubAck

from bench._stats import Result, print_table
from servicekit.cloudevents import CloudEvent
from servicekit.db import create_engine, session_factory
from servicekit.events import EventPublisher, connect_nats, ensure_stream
from servicekit.infra import NatsServer, free_port
from servicekit.migrate import SERVICEKIT_MIGRATIONS, SERVICEKIT_VERSION_TABLE, run_migrations
from servicekit.outbox import OutboxRelay, enqueue, outbox_events

SUBJECT = "bench.data-object.ready"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def sample_event(number: int) -> CloudEvent:
    return CloudEvent(
        type="catalog.data-object.ready",
        source="/catalog/data-object",
        subject=f"data-object/{number}",
        data={"id": f"data-object/{number}", "bucket": "raw-spectra", "bytes": 1 << 20},
    )


async def bare_await_each(js: JetStreamContext, events: list[CloudEvent]) -> Result:
    payloads = [(event.id, event.to_json()) for event in events]
    latencies = []
    start = time.perf_counter()
    for msg_id, payload in payloads:
        sent = time.perf_counter()
        await js.publish(SUBJECT, payload, headers={"Nats-Msg-Id": msg_id})
        latencies.append(time.perf_counter() - sent)
    return Result(
        "nats-py js.publish, await each ack", len(events), time.perf_counter() - start, latencies
    )


async def bare_pipelined(js: JetStreamContext, events: list[CloudEvent], window: int) -> Result:
    payloads = [(event.id, event.to_json()) for event in events]
    latencies: list[float] = []
    start = time.perf_counter()
    for msg_id, payload in payloads:
        sent = time.perf_counter()
        future = await js.publish_async(SUBJECT, payload, headers={"Nats-Msg-Id": msg_id})
        future.add_done_callback(lambda _, sent=sent: latencies.append(time.perf_counter() - sent))
    await js.publish_async_completed()
    return Result(
        f"nats-py js.publish_async, window {window}",
        len(events),
        time.perf_counter() - start,
        latencies,
    )


async def publisher_await_each(publisher: EventPublisher, events: list[CloudEvent]) -> Result:
    latencies = []
    start = time.perf_counter()
    for event in events:
        sent = time.perf_counter()
        await publisher.publish(SUBJECT, event)
        latencies.append(time.perf_counter() - sent)
    return Result(
        "EventPublisher.publish, await each", len(events), time.perf_counter() - start, latencies
    )


async def publisher_concurrent(
    publisher: EventPublisher, events: list[CloudEvent], window: int
) -> Result:
    latencies = []
    slots = asyncio.Semaphore(window)

    async def publish(event: CloudEvent) -> None:
        async with slots:
            sent = time.perf_counter()
            await publisher.publish(SUBJECT, event)
            latencies.append(time.perf_counter() - sent)

    start = time.perf_counter()
    await asyncio.gather(*(publish(event) for event in events))
    return Result(
        f"EventPublisher.publish, {window} concurrent",
        len(events),
        time.perf_counter() - start,
        latencies,
    )


class CountdownPublisher(EventPublisher):
    """Sets `done` once `expected` events have been acked by the stream."""

    def __init__(self, js: JetStreamContext, expected: int) -> None:
        super().__init__(js)
        self._left = expected
        self.done = asyncio.Event()

    async def publish_bytes(self, subject: str, payload: bytes, *, msg_id: str) -> PubAck:
        ack = await super().publish_bytes(subject, payload, msg_id=msg_id)
        self._left -= 1
        if self._left == 0:
            self.done.set()
        return ack


async def outbox_end_to_end(
    url: str, label: str, js: JetStreamContext, events: list[CloudEvent], producers: int
) -> Result:
    """Producers commit one event per transaction while the relay publishes them."""
    engine = create_engine(url, pool_size=producers + 2)
    sessions = session_factory(engine)
    publisher = CountdownPublisher(js, len(events))
    relay = OutboxRelay(sessions, publisher, poll_interval=0.05)
    queue = list(reversed(events))

    async def produce() -> None:
        while queue:
            event = queue.pop()
            async with sessions() as session, session.begin():
                await enqueue(session, SUBJECT, event)
            relay.notify()

    try:
        await relay.start()
        await asyncio.gather(*(produce() for _ in range(producers)))
        await publisher.done.wait()
        await relay.stop()  # lets the relay mark its last batch
        async with sessions() as session:
            rows = (
                await session.execute(
                    sa.select(outbox_events.c.created_at, outbox_events.c.published_at)
                )
            ).all()
        await _clear(sessions)
    finally:
        await relay.stop()
        await engine.dispose()
    assert all(row.published_at is not None for row in rows)
    first = min(row.created_at for row in rows)
    last = max(row.published_at for row in rows)
    latencies = [(row.published_at - row.created_at).total_seconds() for row in rows]
    plural = "s" if producers > 1 else ""
    return Result(
        f"outbox {label}: enqueue+commit -> published, {producers} producer{plural}",
        len(rows),
        (last - first).total_seconds(),
        latencies,
        note="1 event per transaction; latency = published_at - created_at",
    )


async def outbox_drain(
    url: str, label: str, publisher: EventPublisher, events: list[CloudEvent]
) -> Result:
    """A backlog (as after an outage) relayed as fast as the relay goes."""
    engine = create_engine(url)
    sessions = session_factory(engine)
    try:
        async with sessions() as session, session.begin():
            for event in events:
                await enqueue(session, SUBJECT, event)
        relay = OutboxRelay(sessions, publisher)
        start = time.perf_counter()
        published = 0
        while count := await relay.relay_once():
            published += count
        seconds = time.perf_counter() - start
        await _clear(sessions)
    finally:
        await engine.dispose()
    return Result(
        f"outbox {label}: relay drains a backlog",
        published,
        seconds,
        note="batches of 100 pipelined, marked per batch",
    )


async def _clear(sessions) -> None:
    async with sessions() as session, session.begin():
        await session.execute(sa.delete(outbox_events))


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str | None]:
    """A throwaway database (SQLAlchemy URL), or None when no PostgreSQL answers."""
    server = os.environ.get("EXTRACT_BENCH_PG_URL", DEFAULT_PG_URL)
    name = f"extract_bench_{uuid.uuid4().hex[:10]}"
    try:
        admin = await asyncpg.connect(server, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        print(f"PostgreSQL rows skipped: no server at {server} ({exc})")
        yield None
        return
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = server.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        yield f"{url}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def run(events_count: int, window: int, producers: int) -> None:
    with tempfile.TemporaryDirectory(prefix="extract-bench-") as scratch:
        nats = NatsServer(
            port=free_port(),
            store_dir=Path(scratch) / "jetstream",
            log_path=Path(scratch) / "nats.log",
        )
        nats.start()
        client = await connect_nats(nats.url, name="bench-outbox")
        try:
            js = client.jetstream(publish_async_max_pending=window)
            await ensure_stream(js, "bench")
            publisher = EventPublisher(js)
            for event in (sample_event(n) for n in range(500)):  # warm-up
                await publisher.publish(SUBJECT, event)
            payload = len(sample_event(0).to_json())
            print(
                f"{events_count} events of ~{payload} B; nats-server {nats.url} (file store); "
                f"SQLite {sqlite3.sqlite_version} (WAL)"
            )

            def batch() -> list[CloudEvent]:
                return [sample_event(n) for n in range(events_count)]

            results = [
                await bare_await_each(js, batch()),
                await bare_pipelined(js, batch(), window),
                await publisher_await_each(publisher, batch()),
                await publisher_concurrent(publisher, batch(), window),
            ]
            sqlite_url = f"sqlite+aiosqlite:///{Path(scratch) / 'bench.sqlite'}"
            async with postgres_database() as pg_url:
                for label, url in (("SQLite", sqlite_url), ("PostgreSQL", pg_url)):
                    if url is None:
                        continue
                    await run_migrations(
                        url, SERVICEKIT_MIGRATIONS, version_table=SERVICEKIT_VERSION_TABLE
                    )
                    for concurrency in sorted({1, producers}):
                        results.append(
                            await outbox_end_to_end(url, label, js, batch(), concurrency)
                        )
                    results.append(await outbox_drain(url, label, publisher, batch()))
                    await js.purge_stream("BENCH")
        finally:
            await client.close()
            nats.stop()
    print_table(results, baseline=0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.outbox", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--events", type=int, default=5000, help="events per path (5000)")
    parser.add_argument(
        "--window", type=int, default=256, help="in-flight publishes for the pipelined paths (256)"
    )
    parser.add_argument(
        "--producers",
        type=int,
        default=8,
        help="concurrent committing producers for the outbox path (8)",
    )
    args = parser.parse_args(argv)
    asyncio.run(run(args.events, args.window, args.producers))


if __name__ == "__main__":
    main()
