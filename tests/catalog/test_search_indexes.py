"""PostgreSQL plans searches through the migrations' indexes, on a table with enough rows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import shapely
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, Executable

import services.catalog
from servicekit.cimi_filter import GeoComparison
from servicekit.db import create_engine, session_factory
from servicekit.migrate import migrate_service_database
from servicekit.security import ADMIN_CLAIM, Identity
from services.catalog.geo import boxed_candidates
from services.catalog.query import order_by, selection
from services.catalog.rows import insert_resources
from services.catalog.tables import catalog_resources

MIGRATIONS = Path(services.catalog.__file__).with_name("migrations")
ADMIN = Identity("user/root", frozenset({ADMIN_CLAIM}))
ROWS = 20_000


class Explain(Executable, ClauseElement):
    inherit_cache = False

    def __init__(self, statement: sa.Select[Any]) -> None:
        self.statement = statement


@compiles(Explain)
def _explain(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN " + compiler.process(element.statement, **kw)


def _document(n: int) -> dict[str, Any]:
    return {
        "id": f"data-record/{n:06d}",
        "acl": {"owners": ["user/alice"]},
        "timestamp": f"2026-{n % 12 + 1:02d}-{n % 28 + 1:02d}T{n % 24:02d}:00:00.000Z",
        "bytes": n * 37 % 100_000,
        "state": ("ready", "new", "gone")[n % 3],
        "infrastructure-service": f"infrastructure-service/s3-{n % 10}",
        "name": f"record {n} of the {('flood', 'storm', 'drought')[n % 3]} campaign",
        "location": [n % 360 - 180 + 0.5, n % 170 - 85 + 0.5],
    }


@pytest.fixture(scope="module")
async def engine(pg_module_database_url: str) -> AsyncIterator[AsyncEngine]:
    """A database seeded once for the module's tests, which only plan queries on it."""
    await migrate_service_database(pg_module_database_url, MIGRATIONS, "catalog_alembic_version")
    engine = create_engine(pg_module_database_url)
    try:
        async with session_factory(engine)() as session:
            documents = [_document(n) for n in range(ROWS)]
            for start in range(0, ROWS, 5_000):
                await insert_resources(session, documents[start : start + 5_000])
            await session.commit()
            await session.execute(sa.text("ANALYZE catalog_resources"))
            await session.commit()
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    async with session_factory(engine)() as session:
        yield session


async def _plan(
    session: AsyncSession,
    filter_text: str,
    orderby: str | None = None,
    identity: Identity = ADMIN,
) -> str:
    where = await selection(session, "data-record", identity, filter_text)
    statement = sa.select(catalog_resources.c.id).where(where)
    statement = statement.order_by(*order_by(orderby)).limit(50)
    return await _explain_rows(session, statement)


async def _count_plan(session: AsyncSession, filter_text: str, identity: Identity) -> str:
    where = await selection(session, "data-record", identity, filter_text)
    return await _explain_rows(session, sa.select(sa.func.count()).where(where))


async def _explain_rows(session: AsyncSession, statement: sa.Select[Any]) -> str:
    rows = await session.execute(Explain(statement))
    return "\n".join(row[0] for row in rows)


async def test_filter_and_orderby_on_hot_fields_use_their_btree_index(
    session: AsyncSession,
) -> None:
    plan = await _plan(session, "bytes>5000 and state='ready'", "timestamp:desc")
    assert "ix_catalog_resources_hot_timestamp_desc" in plan, plan
    plan = await _plan(session, "timestamp>'2026-06-01' and bytes<100", "bytes")
    assert "ix_catalog_resources_hot_bytes" in plan, plan


async def test_a_service_and_state_search_counts_and_pages_through_their_index(
    session: AsyncSession,
) -> None:
    terms = "infrastructure-service='infrastructure-service/s3-3' and state='ready' and bytes>500"
    alice = Identity("user/alice")
    plan = await _plan(session, terms, "timestamp:desc", alice)
    assert "ix_catalog_resources_service_state" in plan, plan
    assert "Sort" not in plan, plan  # read in the index's order
    plan = await _count_plan(session, terms, alice)
    assert "ix_catalog_resources_service_state" in plan, plan


async def test_full_text_on_name_uses_the_gin_index(session: AsyncSession) -> None:
    plan = await _plan(session, "name=='storm 1234'")
    assert "ix_catalog_resources_name_text" in plan, plan


async def test_a_geo_term_reads_candidates_through_the_bounding_box_index(
    session: AsyncSession,
) -> None:
    geneva = shapely.from_wkt("POLYGON ((6 46, 6.3 46, 6.3 46.4, 6 46.4, 6 46))")
    scope = catalog_resources.c.collection == "data-record"
    for op in ("intersects", "within", "contains", "disjoint"):
        candidates = boxed_candidates(scope, GeoComparison("location", op, geneva))
        assert candidates is not None
        plan = "\n".join(row[0] for row in await session.execute(Explain(candidates)))
        assert "ix_catalog_resources_location_bbox" in plan, (op, plan)
