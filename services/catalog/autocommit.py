"""A statement that is its own transaction, sent by asyncpg on a pooled connection of its own.

For the one statement of a single add, the ORM session's connection, execution and commit cost
more CPU than PostgreSQL spends on the statement (bench.catalog). The statement is compiled
once by SQLAlchemy, so its SQL and the conversion of each parameter for the driver are the
ones the session would send; only the machinery around them is skipped. Being one statement
outside a transaction, it commits whole or not at all, a crash included.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.engine import Compiled, Dialect
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["DriverStatement", "execute"]


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


async def execute(
    engine: AsyncEngine, statement: DriverStatement, values: Mapping[str, Any]
) -> list[asyncpg.Record]:
    """The statement's rows, run with `values` outside any transaction on a connection of the
    engine's pool. A PostgreSQL error is raised as SQLAlchemy's DBAPIError (`orig` has its
    `sqlstate`), as the session would; a connection that failed otherwise is discarded."""
    # Through an AsyncConnection, whose exit awaits the connection's return to the pool (or
    # its closing, beyond the pool's size): a pool connection closed by hand could not await.
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        driver: asyncpg.Connection = raw.driver_connection  # type: ignore[assignment]
        try:
            return await driver.fetch(statement.sql, *statement.arguments(values))
        except asyncpg.PostgresError as error:
            raise sa.exc.DBAPIError(statement.sql, None, error) from error
        except BaseException as error:  # lost, cancelled mid-statement: not to be used again
            await connection.invalidate(error if isinstance(error, Exception) else None)
            raise
