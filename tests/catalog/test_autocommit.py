"""A statement run as its own transaction past the session: all of it or nothing, and a
connection cut mid-statement never goes back to the pool."""

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
from services.catalog.autocommit import DriverStatement, execute
from services.catalog.tables import catalog_resources

NOW = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
async def engine(pg_database_url: str) -> AsyncIterator[AsyncEngine]:
    await migrate_service_database(pg_database_url, MIGRATIONS, VERSION_TABLE)
    engine = create_engine(pg_database_url, pool_size=1, max_overflow=2)
    try:
        yield engine
    finally:
        await engine.dispose()


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


async def _backend(engine: AsyncEngine) -> int:
    (row,) = await execute(
        engine, DriverStatement.compile(sa.select(sa.func.pg_backend_pid()), engine.dialect), {}
    )
    return int(row[0])


async def test_a_record_and_its_event_commit_together(engine: AsyncEngine) -> None:
    statement = DriverStatement.compile(_record_then(), engine.dialect)
    await execute(engine, statement, _values("data-record/r1"))
    assert await _stored(engine) == (["data-record/r1"], ["e1"])


async def test_a_refused_event_leaves_no_record_and_an_error_with_its_sqlstate(
    engine: AsyncEngine,
) -> None:
    statement = DriverStatement.compile(_record_then(), engine.dialect)
    await execute(engine, statement, _values("data-record/r1"))
    backend = await _backend(engine)
    with pytest.raises(sa.exc.DBAPIError) as refused:  # the event id is taken
        await execute(engine, statement, _values("data-record/r2", event_id="e1"))
    assert refused.value.orig.sqlstate == "23505"  # type: ignore[union-attr]
    assert await _stored(engine) == (["data-record/r1"], ["e1"])
    assert await _backend(engine) == backend  # a refused statement leaves a usable connection


async def test_a_statement_cut_short_writes_nothing_and_its_connection_is_dropped(
    engine: AsyncEngine,
) -> None:
    stalled = DriverStatement.compile(_record_then(sa.select(sa.func.pg_sleep(30))), engine.dialect)
    backend = await _backend(engine)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await execute(engine, stalled, _values("data-record/r1"))
    assert await _stored(engine) == ([], [])
    assert await _backend(engine) != backend


async def test_connections_beyond_the_pool_size_are_closed_after_their_statement(
    engine: AsyncEngine,
) -> None:
    sleep = DriverStatement.compile(sa.select(sa.func.pg_sleep(0.2)), engine.dialect)
    await asyncio.gather(*(execute(engine, sleep, {}) for _ in range(3)))
    others = DriverStatement.compile(
        sa.select(sa.func.count())
        .select_from(sa.table("pg_stat_activity", sa.column("datname"), sa.column("pid")))
        .where(
            sa.column("datname") == sa.func.current_database(),
            sa.column("pid") != sa.func.pg_backend_pid(),
        ),
        engine.dialect,
    )

    async def alone() -> bool:  # a closed backend leaves pg_stat_activity soon after
        return (await execute(engine, others, {}))[0][0] == 0

    await eventually(alone, within=10)
