"""Async SQLAlchemy engines for PostgreSQL (asyncpg) and SQLite (aiosqlite), types, checks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

from servicekit.errors import ServiceUnavailable

SUPPORTED_DRIVERS = ("postgresql+asyncpg", "sqlite+aiosqlite")

# How long a SQLite writer waits for another writer's lock before failing with "database is
# locked"; the relay and request handlers write concurrently to one file.
SQLITE_BUSY_TIMEOUT_MS = 5000
DEFAULT_POOL_SIZE = 10

JSONDocument = sa.JSON().with_variant(JSONB(), "postgresql")
"""A JSON column: JSONB on PostgreSQL (indexable), JSON text on SQLite."""

servicekit_metadata = sa.MetaData()
"""servicekit's own tables (outbox, inbox), created by the migrations in servicekit/migrations."""

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The default clock for timestamps written to the database; tests inject their own."""
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware, on both backends.

    SQLite has no time zones: SQLAlchemy stores its DateTime as naive text, so without this
    type the same column reads back aware on PostgreSQL and naive on SQLite.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def create_engine(url: str, *, pool_size: int = DEFAULT_POOL_SIZE, **kw: Any) -> AsyncEngine:
    """An async engine for `postgresql+asyncpg://…` or `sqlite+aiosqlite:///…`.

    `pool_size` connections are kept open once used, and as many again may be opened for a
    burst. A pool smaller than the requests in flight opens and closes a connection for
    each of the others (a PostgreSQL backend started per request: bench.catalog's inserts at
    concurrency 8 spent more time there than in their statement). Unused with a `poolclass`.

    SQLite connections get WAL (readers do not block the writer), foreign keys (off by
    default in SQLite) and a busy timeout. Extra keywords go to SQLAlchemy.
    """
    try:
        driver = make_url(url).drivername
    except ArgumentError as exc:
        raise ValueError(f"database URL {url!r} cannot be parsed: {exc}") from exc
    if driver not in SUPPORTED_DRIVERS:
        raise ValueError(
            f"database URL scheme {driver!r} is not supported; "
            f"use one of {', '.join(s + '://' for s in SUPPORTED_DRIVERS)}"
        )
    if "poolclass" not in kw:
        kw = {"pool_size": pool_size, "max_overflow": pool_size} | kw
    engine = _create_async_engine(url, **kw)
    if driver.startswith("sqlite"):
        sa.event.listen(engine.sync_engine, "connect", _configure_sqlite)
    return engine


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def session_factory(
    engine: AsyncEngine, *, info: Mapping[str, Any] | None = None
) -> async_sessionmaker[AsyncSession]:
    """Sessions whose objects stay readable after commit (responses are built after it).

    `info` is copied into every session's `info`: the service-wide context (a signing key, say)
    that domain functions taking `session=` need without one more parameter everywhere.
    """
    return async_sessionmaker(engine, expire_on_commit=False, info=dict(info or {}))


def is_postgres(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


def database_check(engine: AsyncEngine, *, timeout: float = 2.0) -> Callable[[], Awaitable[None]]:
    """A readiness check: returns when the database answers `SELECT 1`, else ServiceUnavailable."""

    async def check() -> None:
        try:
            async with asyncio.timeout(timeout), engine.connect() as connection:
                await connection.execute(sa.text("SELECT 1"))
        except (OSError, TimeoutError, sa.exc.SQLAlchemyError) as exc:
            raise ServiceUnavailable(
                f"database does not answer: {exc}", detail={"check": "database"}
            ) from exc

    return check
