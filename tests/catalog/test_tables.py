"""Tests for services/catalog/tables.py and its migrations: what the migration creates."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

import services.catalog
from servicekit.db import create_engine
from servicekit.migrate import migrate_service_database
from services.catalog.tables import catalog_resources

MIGRATIONS = Path(services.catalog.__file__).with_name("migrations")


async def _inspect(url: str) -> tuple[set[str], set[str]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:

            def read(sync: sa.Connection) -> tuple[set[str], set[str]]:
                inspector = sa.inspect(sync)
                columns = {c["name"] for c in inspector.get_columns("catalog_resources")}
                indexes = {i["name"] for i in inspector.get_indexes("catalog_resources")}
                return columns, {name for name in indexes if name}

            return await connection.run_sync(read)
    finally:
        await engine.dispose()


async def test_the_migration_creates_the_table_as_declared(database_url: str) -> None:
    await migrate_service_database(database_url, MIGRATIONS, "catalog_alembic_version")
    columns, indexes = await _inspect(database_url)
    assert columns == set(catalog_resources.c.keys())
    assert {index.name for index in catalog_resources.indexes} <= indexes


async def test_postgresql_gets_gin_indexes_on_document_and_viewers(pg_database_url: str) -> None:
    await migrate_service_database(pg_database_url, MIGRATIONS, "catalog_alembic_version")
    _, indexes = await _inspect(pg_database_url)
    assert {"ix_catalog_resources_document", "ix_catalog_resources_viewers"} <= indexes


async def test_migrating_twice_changes_nothing(sqlite_database_url: str) -> None:
    for _ in range(2):
        await migrate_service_database(sqlite_database_url, MIGRATIONS, "catalog_alembic_version")
    columns, _ = await _inspect(sqlite_database_url)
    assert columns == set(catalog_resources.c.keys())
