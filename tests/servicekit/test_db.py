"""servicekit.db against real SQLite files and a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from servicekit.db import (
    JSONDocument,
    UTCDateTime,
    create_engine,
    database_check,
    is_postgres,
    session_factory,
)
from servicekit.errors import ServiceUnavailable
from servicekit.infra import free_port

documents = sa.Table(
    "documents",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("body", JSONDocument, nullable=False),
    sa.Column("at", UTCDateTime(), nullable=True),
)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    async with engine.begin() as connection:
        await connection.run_sync(documents.metadata.create_all)
    yield engine
    await engine.dispose()


@pytest.mark.parametrize(
    "url", ["mysql+aiomysql://db/x", "postgresql://db/x", "sqlite:///x.db", "not a url"]
)
def test_create_engine_refuses_other_schemes(url: str) -> None:
    with pytest.raises(ValueError, match=r"postgresql\+asyncpg://|cannot be parsed"):
        create_engine(url)


async def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(
    sqlite_database_url: str,
) -> None:
    engine = create_engine(sqlite_database_url)
    try:
        async with engine.connect() as connection:
            journal = await connection.scalar(sa.text("PRAGMA journal_mode"))
            foreign_keys = await connection.scalar(sa.text("PRAGMA foreign_keys"))
            busy_timeout = await connection.scalar(sa.text("PRAGMA busy_timeout"))
    finally:
        await engine.dispose()
    assert (journal, foreign_keys, busy_timeout) == ("wal", 1, 5000)


async def test_sqlite_enforces_foreign_keys(sqlite_database_url: str) -> None:
    engine = create_engine(sqlite_database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
            await connection.execute(
                sa.text("CREATE TABLE child (parent_id INTEGER REFERENCES parent(id))")
            )
        with pytest.raises(sa.exc.IntegrityError):
            async with engine.begin() as connection:
                await connection.execute(sa.text("INSERT INTO child VALUES (42)"))
    finally:
        await engine.dispose()


async def test_json_documents_round_trip(engine: AsyncEngine) -> None:
    body = {"name": "spectra", "tags": ["radio", "raw"], "size": 3, "nested": {"ok": True}}
    async with session_factory(engine)() as session, session.begin():
        await session.execute(sa.insert(documents).values(id=1, body=body))
    async with engine.connect() as connection:
        assert await connection.scalar(sa.select(documents.c.body)) == body


async def test_json_documents_are_jsonb_on_postgres_and_json_on_sqlite(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as connection:
        compiled = sa.schema.CreateTable(documents).compile(connection)
    assert ("JSONB" in str(compiled)) is is_postgres(engine)


async def test_utc_datetimes_read_back_aware_in_utc(engine: AsyncEngine) -> None:
    moment = datetime(2025, 3, 1, 13, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    async with engine.begin() as connection:
        await connection.execute(sa.insert(documents).values(id=1, body={}, at=moment))
    async with engine.connect() as connection:
        stored = await connection.scalar(sa.select(documents.c.at))
    assert stored == moment
    assert stored.tzinfo is UTC


async def test_utc_datetimes_refuse_naive_values(engine: AsyncEngine) -> None:
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        async with engine.begin() as connection:
            await connection.execute(
                sa.insert(documents).values(id=1, body={}, at=datetime(2025, 1, 1))
            )


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str]


async def test_sessions_keep_objects_readable_after_commit(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    async with session_factory(engine)() as session:
        note = Note(id=1, text="kept")
        session.add(note)
        await session.commit()
        # An expired attribute would need lazy IO here, which raises under asyncio.
        assert note.text == "kept"


def test_is_postgres_names_the_backend(pg_database_url: str, sqlite_database_url: str) -> None:
    assert is_postgres(create_engine(pg_database_url))
    assert not is_postgres(create_engine(sqlite_database_url))


async def test_database_check_passes_when_the_database_answers(engine: AsyncEngine) -> None:
    await database_check(engine)()


async def test_database_check_fails_when_postgres_is_unreachable() -> None:
    engine = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere")
    try:
        with pytest.raises(ServiceUnavailable, match="database does not answer") as caught:
            await database_check(engine)()
    finally:
        await engine.dispose()
    assert caught.value.detail == {"check": "database"}


async def test_database_check_fails_when_the_sqlite_file_is_not_a_database(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite"
    path.write_bytes(b"this is not a SQLite database, just bytes " * 100)
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        with pytest.raises(ServiceUnavailable, match="database does not answer"):
            await database_check(engine)()
    finally:
        await engine.dispose()


async def test_connections_in_use_at_once_up_to_the_pool_size_stay_open(
    pg_database_url: str,
) -> None:
    """Eight requests at once, twice: the second eight reuse the first eight's connections (a
    pool smaller than that started a PostgreSQL backend per request beyond it)."""
    engine = create_engine(pg_database_url, pool_size=8)

    async def backends() -> set[int]:
        connections = [await engine.connect() for _ in range(8)]
        try:
            return {
                (await c.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
                for c in connections
            }
        finally:
            for connection in connections:
                await connection.close()

    try:
        first = await backends()
        assert len(first) == 8
        assert await backends() == first
    finally:
        await engine.dispose()
