"""Statements that are their own transaction, sent by asyncpg on a pool of their own.

For the one statement of a single add, SQLAlchemy's connection checkout, execution and return
cost more CPU than PostgreSQL spends on the statement (bench.catalog: 0.30 ms against 0.17 ms
by asyncpg alone). The statement is compiled once by SQLAlchemy, so its SQL and the conversion
of each parameter for the driver are the ones the session would send; only the machinery
around them is skipped. Being one statement outside a transaction, it commits whole or not at
all, a crash included.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.engine import Compiled, Dialect, make_url

__all__ = ["STATEMENTS", "DriverStatement", "StatementPool"]

STATEMENTS = "catalog.statement-pool"
"""Key of the process's StatementPool in `session.info` (PostgreSQL only)."""


@dataclass(frozen=True)
class DriverStatement:
    """A statement compiled for asyncpg: its SQL and, in order, each parameter's name and
    bind processor (SQLAlchemy's conversion of a value for the driver, None: as it is)."""

    compiled: Compiled
    parameters: tuple[tuple[str, Callable[[Any], Any] | None], ...]

    @classmethod
    def compile(cls, statement: sa.ClauseElement, dialect: Dialect) -> DriverStatement:
        compiled = statement.compile(dialect=dialect)
        binds = compiled.binds  # type: ignore[attr-defined]
        return cls(
            compiled,
            tuple(
                (name, binds[name].type.dialect_impl(dialect).bind_processor(dialect))
                for name in compiled.positiontup or ()  # type: ignore[attr-defined]
            ),
        )

    @property
    def sql(self) -> str:
        return self.compiled.string

    def arguments(self, values: Mapping[str, Any]) -> list[Any]:
        """The driver's arguments: `values` by name, with the values bound in the statement."""
        named = self.compiled.construct_params(values)
        return [
            named[name] if process is None else process(named[name])
            for name, process in self.parameters
        ]


class StatementPool:
    """Up to `size` asyncpg connections, opened as needed, for statements outside any
    transaction.

    Such a statement leaves nothing in the session to reset, so a connection goes back to the
    pool without asyncpg's reset query (a round trip per statement). A statement cancelled
    mid-way is cancelled on the server before its connection is reused; a connection that
    failed is closed and replaced (asyncpg's pool).
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str, size: int) -> StatementPool:
        """A pool on the database of `url` (SQLAlchemy's `postgresql+asyncpg://…`)."""
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        pool = await asyncpg.create_pool(
            dsn, min_size=0, max_size=size, init=_json_codecs, reset=_nothing_to_reset
        )
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    async def execute(
        self, statement: DriverStatement, values: Mapping[str, Any]
    ) -> list[asyncpg.Record]:
        """The statement's rows, run with `values` as its own transaction. A PostgreSQL error
        is raised as SQLAlchemy's DBAPIError (`orig` has its `sqlstate`), as the session
        would."""
        async with self._pool.acquire() as connection:
            try:
                return await connection.fetch(statement.sql, *statement.arguments(values))
            except asyncpg.PostgresError as error:
                raise sa.exc.DBAPIError(statement.sql, None, error) from error


async def _json_codecs(connection: asyncpg.Connection) -> None:
    """json and jsonb as SQLAlchemy's connections have them: sent as the text its bind
    processors made, read back as Python values."""
    for name in ("json", "jsonb"):
        await connection.set_type_codec(name, encoder=str, decoder=json.loads, schema="pg_catalog")


async def _nothing_to_reset(_: asyncpg.Connection) -> None:
    return None
