"""A statement run as its own transaction past the session: all of it or nothing, a statement
cut short is cancelled on the server, and the pool never holds more than its size."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from servicekit.db import create_engine
from servicekit.migrate import migrate_service_database
from servicekit.outbox import outbox_events
from servicekit.testing.polling import eventually
from services.catalog.app import MIGRATIONS, VERSION_TABLE
from services.catalog.autocommit import DriverStatement, StatementPool
from services.catalog.tables import catalog_resources

NOW = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
async def engine(pg_database_url: str) -> AsyncIterator[AsyncEngine]:
    await migrate_service_database(pg_database_url, MIGRATIONS, VERSION_TABLE)
    engine = create_engine(pg_database_url, pool_size=1)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def pool(pg_database_url: str, engine: AsyncEngine) -> AsyncIterator[StatementPool]:
    pool = await StatementPool.open(pg_database_url, size=2)
    try:
        yield pool
    finally:
        await pool.close()


def _record_then(follow: sa.Select[tuple[object]] | None = None) -> sa.ClauseElement:
    """A record's insert as a data-modifying CTE of `follow`, or of its event's insert."""
    values = {
        "id": sa.bindparam("id"),
        "collection": "data-record",
        "document": sa.bindparam("document", type_=catalog_resources.c.document.type),
        "created": sa.bindparam("now", type_=catalog_resources.c.created.type),
        "updated": sa.bindparam("now", type_=catalog_resources.c.updated.type),
        "viewers": sa.bindparam("viewers", type_=catalog_resources.c.viewers.type),
    }
    record = postgresql.insert(catalog_resources).values(values).cte("record")
    if follow is not None:
        return follow.add_cte(record)
    event = sa.insert(outbox_events).values(
        id=sa.bindparam("event_id"),
        subject="catalog.data-record.created",
        payload=b"{}",
        created_at=sa.bindparam("now", type_=outbox_events.c.created_at.type),
        attempts=0,
    )
    return event.add_cte(record)


def _values(resource_id: str, event_id: str = "e1") -> dict[str, object]:
    document = {"id": resource_id, "resource-type": "data-record", "acl": {"owners": ["u"]}}
    return {
        "id": resource_id,
        "document": document,
        "now": NOW,
        "viewers": ["u"],
        "event_id": event_id,
    }


async def _stored(engine: AsyncEngine) -> tuple[list[str], list[str]]:
    async with engine.connect() as connection:
        records = await connection.scalars(sa.select(catalog_resources.c.id))
        events = await connection.scalars(sa.select(outbox_events.c.id))
        return sorted(records), sorted(events)


async def _backend(pool: StatementPool, engine: AsyncEngine) -> int:
    statement = DriverStatement.compile(sa.select(sa.func.pg_backend_pid()), engine.dialect)
    (row,) = await pool.execute(statement, {})
    return int(row[0])


async def test_a_record_and_its_event_commit_together(
    engine: AsyncEngine, pool: StatementPool
) -> None:
    statement = DriverStatement.compile(_record_then(), engine.dialect)
    await pool.execute(statement, _values("data-record/r1"))
    assert await _stored(engine) == (["data-record/r1"], ["e1"])


async def test_a_refused_event_leaves_no_record_and_an_error_with_its_sqlstate(
    engine: AsyncEngine, pool: StatementPool
) -> None:
    statement = DriverStatement.compile(_record_then(), engine.dialect)
    await pool.execute(statement, _values("data-record/r1"))
    backend = await _backend(pool, engine)
    with pytest.raises(sa.exc.DBAPIError) as refused:  # the event id is taken
        await pool.execute(statement, _values("data-record/r2", event_id="e1"))
    assert refused.value.orig.sqlstate == "23505"  # type: ignore[union-attr]
    assert await _stored(engine) == (["data-record/r1"], ["e1"])
    assert await _backend(pool, engine) == backend  # a refused statement leaves a usable connection


async def test_a_statement_cut_short_is_cancelled_and_writes_nothing(
    engine: AsyncEngine, pool: StatementPool
) -> None:
    stalled = DriverStatement.compile(_record_then(sa.select(sa.func.pg_sleep(30))), engine.dialect)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await pool.execute(stalled, _values("data-record/r1"))
    sleeping = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%pg_sleep(%'"
    )

    async def cancelled() -> bool:  # not left to sleep its 30 s, then commit
        async with engine.connect() as connection:
            return await connection.scalar(sleeping) == 1  # this very query

    await eventually(cancelled, within=10)
    assert await _stored(engine) == ([], [])
    statement = DriverStatement.compile(_record_then(), engine.dialect)
    await pool.execute(statement, _values("data-record/r2"))  # the pool still serves
    assert await _stored(engine) == (["data-record/r2"], ["e1"])


async def test_statements_beyond_the_pool_size_wait_for_a_connection(
    engine: AsyncEngine, pool: StatementPool
) -> None:
    slow = DriverStatement.compile(
        sa.select(sa.func.pg_backend_pid()).select_from(sa.func.pg_sleep(0.2)), engine.dialect
    )
    answers = await asyncio.gather(*(pool.execute(slow, {}) for _ in range(5)))
    assert len(answers) == 5
    assert len({rows[0][0] for rows in answers}) <= 2  # the pool's size
