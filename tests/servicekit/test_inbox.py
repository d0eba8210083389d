"""The consumer inbox (servicekit.inbox) on real SQLite and PostgreSQL databases."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from servicekit.db import create_engine, session_factory
from servicekit.inbox import consume_once, inbox_events, purge_processed
from servicekit.migrate import SERVICEKIT_MIGRATIONS, SERVICEKIT_VERSION_TABLE, run_migrations

effects = sa.Table("effects", sa.MetaData(), sa.Column("event_id", sa.String, nullable=False))


async def migrated_engine(url: str) -> AsyncEngine:
    await run_migrations(url, SERVICEKIT_MIGRATIONS, version_table=SERVICEKIT_VERSION_TABLE)
    engine = create_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(effects.metadata.create_all)
    return engine


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = await migrated_engine(database_url)
    yield session_factory(engine)
    await engine.dispose()


async def handle(
    sessions: async_sessionmaker[AsyncSession], consumer: str, event_id: str, *, fail: bool = False
) -> bool:
    """What a consumer does: record the event and apply its effect in one transaction."""
    async with sessions() as session, session.begin():
        if not await consume_once(session, consumer, event_id):
            return False
        await session.execute(sa.insert(effects).values(event_id=event_id))
        if fail:
            raise RuntimeError("handler failed after its writes")
    return True


async def effect_count(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return await session.scalar(sa.select(sa.func.count()).select_from(effects))


async def test_an_event_is_processed_once_per_consumer(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    assert await handle(sessions, "twin", "event-1") is True
    assert await handle(sessions, "twin", "event-1") is False
    assert await handle(sessions, "scheduler", "event-1") is True
    assert await effect_count(sessions) == 2


async def test_a_failed_handler_leaves_no_record_so_the_redelivery_is_processed(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    with pytest.raises(RuntimeError):
        await handle(sessions, "twin", "event-1", fail=True)
    assert await effect_count(sessions) == 0
    assert await handle(sessions, "twin", "event-1") is True
    assert await effect_count(sessions) == 1


async def test_processed_records_can_be_purged(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    old = datetime(2024, 1, 1, tzinfo=UTC)
    async with sessions() as session, session.begin():
        await consume_once(session, "twin", "old", clock=lambda: old)
        await consume_once(session, "twin", "new")
    async with sessions() as session, session.begin():
        purged = await purge_processed(session, before=old + timedelta(days=1))
    async with sessions() as session:
        left = (await session.scalars(sa.select(inbox_events.c.event_id))).all()
    assert (purged, left) == (1, ["new"])


async def waiting_for_a_lock(engine: AsyncEngine, within: float = 10.0) -> None:
    """Return once a session of this database waits on a row lock (polled with a deadline)."""
    waiting = sa.text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + within
    while True:
        async with engine.connect() as connection:
            if await connection.scalar(waiting):
                return
        assert time.monotonic() < deadline, "no session started waiting for the row lock"
        await asyncio.sleep(0.02)


async def test_a_concurrent_duplicate_on_postgres_waits_and_is_refused(
    pg_database_url: str,
) -> None:
    engine = await migrated_engine(pg_database_url)
    sessions = session_factory(engine)
    try:
        async with sessions() as first:
            async with first.begin():
                assert await consume_once(first, "twin", "event-1")
                duplicate = asyncio.create_task(handle(sessions, "twin", "event-1"))
                await waiting_for_a_lock(engine)
                assert not duplicate.done()
            assert await duplicate is False
    finally:
        await engine.dispose()
