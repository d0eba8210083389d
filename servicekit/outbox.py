"""The transactional outbox: events are written with the state change, a relay publishes them.

A service calls `enqueue(session, subject, event)` inside the transaction that changes its
state, so the event exists if and only if the change commits. `OutboxRelay` publishes the
rows to JetStream in creation order with `Nats-Msg-Id` = event id and marks them published
after the stream's ack. A crash between the ack and the mark republishes the event with the
same id, which JetStream's duplicate window drops: consumers see each event once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicekit.cloudevents import CloudEvent
from servicekit.db import Clock, UTCDateTime, servicekit_metadata, utc_now
from servicekit.errors import ServiceUnavailable
from servicekit.events import EventPublisher

log = logging.getLogger(__name__)

outbox_events = sa.Table(
    "outbox_events",
    servicekit_metadata,
    # `seq` orders the outbox (timestamps can tie or step back); SQLite only autoincrements
    # an INTEGER PRIMARY KEY, hence the variant.
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("id", sa.String(), nullable=False),
    sa.Column("subject", sa.String(), nullable=False),
    # The exact bytes that are published, so a signed event is relayed unaltered.
    sa.Column("payload", sa.LargeBinary(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("published_at", UTCDateTime(), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.UniqueConstraint("id", name="uq_outbox_events_id"),
    sa.Index(
        "ix_outbox_events_unpublished",
        "seq",
        postgresql_where=sa.text("published_at IS NULL"),
        sqlite_where=sa.text("published_at IS NULL"),
    ),
)

_SUBJECT = re.compile(r"^[^.*>\s]+(\.[^.*>\s]+)*$")
_ERROR_LIMIT = 2000  # characters of the last publish error kept on the row


async def enqueue(
    session: AsyncSession, subject: str, event: CloudEvent, *, clock: Clock = utc_now
) -> None:
    """Add the event to the outbox in the caller's transaction; `relay.notify()` after commit."""
    if not _SUBJECT.match(subject):
        raise ValueError(f"subject {subject!r} is not a NATS subject one can publish to")
    await session.execute(
        sa.insert(outbox_events).values(
            id=event.id,
            subject=subject,
            payload=event.to_json(),
            created_at=clock(),
            attempts=0,
        )
    )


class OutboxRelay:
    """Publishes the outbox in the background: woken by `notify()`, else every `poll_interval`.

    Events leave in outbox order. Two exceptions: several relays on PostgreSQL (rows are
    claimed with FOR UPDATE SKIP LOCKED, so each keeps the order of its own batches), and an
    event NATS refuses while it takes later ones of the same batch (an outage fails them all),
    which is retried and lands after them. On SQLite run one relay per database file.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        publisher: EventPublisher,
        *,
        batch_size: int = 100,
        poll_interval: float = 0.5,
        backoff: float = 0.2,
        backoff_cap: float = 30.0,
        clock: Clock = utc_now,
    ) -> None:
        self._sessions = sessions
        self._publisher = publisher
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._backoff = backoff
        self._backoff_cap = backoff_cap
        self._clock = clock
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def notify(self) -> None:
        """New events were committed: relay them now rather than at the next poll."""
        self._wakeup.set()

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("outbox relay already started")
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self, *, grace: float = 10.0) -> None:
        """Let the batch in hand finish (up to `grace` seconds), then end the relay.

        Cutting a batch short is safe: its unmarked events are published again later and
        JetStream drops the repeats.
        """
        if self._task is None:
            return
        task, self._task = self._task, None
        self._stopping = True
        self._wakeup.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), grace)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def relay_once(self) -> int:
        """Publish one batch of unpublished events in order; return how many were published.

        The batch is pipelined: sent in order on one connection, acks awaited together. The
        events NATS acked are marked published; the first one it did not take gets the error
        recorded on its row, and ServiceUnavailable is raised after the marks are committed.
        """
        published, failure = await self._relay_batch()
        if failure is not None:
            raise failure
        return published

    async def _relay_batch(self) -> tuple[int, ServiceUnavailable | None]:
        async with self._sessions() as session, session.begin():
            claim = (
                sa.select(
                    outbox_events.c.seq,
                    outbox_events.c.id,
                    outbox_events.c.subject,
                    outbox_events.c.payload,
                )
                .where(outbox_events.c.published_at.is_(None))
                .order_by(outbox_events.c.seq)
                .limit(self._batch_size)
            )
            if session.get_bind().dialect.name == "postgresql":
                claim = claim.with_for_update(skip_locked=True)
            rows = (await session.execute(claim)).all()
            published: list[int] = []
            failure: tuple[int, ServiceUnavailable] | None = None
            for row, error in zip(rows, await self._publish(rows), strict=True):
                if error is None:
                    published.append(row.seq)
                elif failure is None:
                    failure = (row.seq, error)
            if published:
                await session.execute(
                    sa.update(outbox_events)
                    .where(outbox_events.c.seq.in_(published))
                    .values(published_at=self._clock())
                )
            if failure is not None:
                await session.execute(
                    sa.update(outbox_events)
                    .where(outbox_events.c.seq == failure[0])
                    .values(
                        attempts=outbox_events.c.attempts + 1,
                        last_error=failure[1].message[:_ERROR_LIMIT],
                    )
                )
        return len(published), failure[1] if failure is not None else None

    async def _publish(self, rows: Sequence[sa.Row[Any]]) -> list[ServiceUnavailable | None]:
        """Publish rows concurrently, in order; each outcome is None or why NATS refused it."""

        async def publish(row: sa.Row[Any]) -> ServiceUnavailable | None:
            try:
                await self._publisher.publish_bytes(row.subject, row.payload, msg_id=row.id)
            except ServiceUnavailable as exc:
                return exc
            return None

        # Tasks start in creation order, so the messages leave in outbox order; any other
        # exception (a crash) cancels the rest and rolls the batch back.
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(publish(row)) for row in rows]
        return [task.result() for task in tasks]

    async def purge_published(self, older_than: timedelta) -> int:
        """Delete events published more than `older_than` ago; return how many."""
        cutoff = self._clock() - older_than
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                sa.delete(outbox_events).where(outbox_events.c.published_at < cutoff)
            )
        return result.rowcount

    async def _run(self) -> None:
        idle_failures = 0
        while not self._stopping:
            self._wakeup.clear()
            try:
                published, failure = await self._relay_batch()
            except Exception as exc:  # the database is down, or a crash: the batch rolled back
                published, failure = 0, exc
            if failure is not None:
                log.warning("outbox relay: %d published, then: %s", published, failure)
            if failure is not None and published == 0:
                # Nothing moved (NATS or the database is down, or only a refused event is
                # left): back off, keep every event. New events still wake the relay, so one
                # refused event does not hold back the ones behind it.
                idle_failures += 1
                delay = min(self._backoff_cap, self._backoff * 2 ** (idle_failures - 1))
                await _wait(self._wakeup, delay)
                continue
            idle_failures = 0
            if failure is None and published < self._batch_size:
                await _wait(self._wakeup, self._poll_interval)


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
