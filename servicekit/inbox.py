"""The consumer inbox: makes handling an event idempotent beyond JetStream's duplicate window."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.db import Clock, UTCDateTime, servicekit_metadata, utc_now

inbox_events = sa.Table(
    "inbox_events",
    servicekit_metadata,
    sa.Column("consumer", sa.String(), nullable=False),
    sa.Column("event_id", sa.String(), nullable=False),
    sa.Column("processed_at", UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("consumer", "event_id", name="pk_inbox_events"),
)


async def consume_once(
    session: AsyncSession, consumer: str, event_id: str, *, clock: Clock = utc_now
) -> bool:
    """True the first time `consumer` sees `event_id`, False for a repeat.

    Runs in the caller's transaction, so the record and the handler's own writes commit (or
    roll back) together. A concurrent duplicate waits on PostgreSQL's row lock for the first
    transaction and then returns False.
    """
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(inbox_events)
        .values(consumer=consumer, event_id=event_id, processed_at=clock())
        .on_conflict_do_nothing(index_elements=["consumer", "event_id"])
        .returning(inbox_events.c.event_id)
    )
    return (await session.execute(statement)).first() is not None


async def purge_processed(session: AsyncSession, *, before: datetime) -> int:
    """Forget events processed before `before` (older than any redelivery); return how many."""
    result = await session.execute(
        sa.delete(inbox_events).where(inbox_events.c.processed_at < before)
    )
    return result.rowcount
