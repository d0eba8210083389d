"""Start-up migrations (servicekit.migrate) on real SQLite and PostgreSQL databases."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from servicekit import inbox, outbox
from servicekit.db import create_engine, servicekit_metadata
from servicekit.migrate import (
    SERVICEKIT_MIGRATIONS,
    SERVICEKIT_VERSION_TABLE,
    migrate_service_database,
    run_migrations,
)

SERVICE_ENV = '''\
"""Alembic environment of a test service."""

from servicekit.migrate import run_env

run_env()
'''

SERVICE_REVISION = '''\
"""widgets"""

import sqlalchemy as sa
from alembic import op

revision = "w0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # servicekit's environment runs first, so its tables are already there.
    assert "outbox_events" in sa.inspect(op.get_bind()).get_table_names()
    op.create_table("widgets", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    op.drop_table("widgets")
'''


@pytest.fixture
def service_migrations(tmp_path: Path) -> Path:
    location = tmp_path / "service migrations"
    (location / "versions").mkdir(parents=True)
    (location / "env.py").write_text(SERVICE_ENV)
    (location / "versions" / "w0001_widgets.py").write_text(textwrap.dedent(SERVICE_REVISION))
    return location


async def tables_and_versions(url: str, *version_tables: str) -> tuple[set[str], list[str]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            tables = set(await connection.run_sync(lambda c: sa.inspect(c).get_table_names()))
            versions = [
                await connection.scalar(sa.text(f"SELECT version_num FROM {table}"))
                for table in version_tables
            ]
    finally:
        await engine.dispose()
    return tables, versions


async def migrate_servicekit(url: str) -> None:
    await run_migrations(url, SERVICEKIT_MIGRATIONS, version_table=SERVICEKIT_VERSION_TABLE)


async def test_servicekit_migrations_create_the_outbox_and_inbox(database_url: str) -> None:
    await migrate_servicekit(database_url)
    tables, versions = await tables_and_versions(database_url, SERVICEKIT_VERSION_TABLE)
    assert {"outbox_events", "inbox_events", SERVICEKIT_VERSION_TABLE} <= tables
    assert versions == ["0002"]


async def test_migrating_twice_changes_nothing(database_url: str) -> None:
    await migrate_servicekit(database_url)
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                sa.insert(inbox.inbox_events).values(
                    consumer="c", event_id="e", processed_at=sa.func.current_timestamp()
                )
            )
        await migrate_servicekit(database_url)
        async with engine.connect() as connection:
            rows = await connection.scalar(
                sa.select(sa.func.count()).select_from(inbox.inbox_events)
            )
    finally:
        await engine.dispose()
    assert rows == 1
    assert (await tables_and_versions(database_url, SERVICEKIT_VERSION_TABLE))[1] == ["0002"]


async def test_migrations_match_the_table_definitions(database_url: str) -> None:
    await migrate_servicekit(database_url)
    assert {outbox.outbox_events.name, inbox.inbox_events.name} == set(servicekit_metadata.tables)
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"version_table": SERVICEKIT_VERSION_TABLE}),
                    servicekit_metadata,
                )
            )
    finally:
        await engine.dispose()
    assert differences == []


async def test_service_migrations_run_after_servicekit_with_their_own_version_table(
    database_url: str, service_migrations: Path
) -> None:
    await migrate_service_database(database_url, service_migrations, "widgets_alembic_version")
    await migrate_service_database(database_url, service_migrations, "widgets_alembic_version")
    tables, versions = await tables_and_versions(
        database_url, SERVICEKIT_VERSION_TABLE, "widgets_alembic_version"
    )
    assert {"outbox_events", "inbox_events", "widgets"} <= tables
    assert versions == ["0002", "w0001"]


async def test_a_service_may_not_reuse_servicekits_version_table(
    sqlite_database_url: str, service_migrations: Path
) -> None:
    with pytest.raises(ValueError, match="servicekit's own version table"):
        await migrate_service_database(
            sqlite_database_url, service_migrations, SERVICEKIT_VERSION_TABLE
        )


async def test_a_directory_without_env_py_is_refused(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError, match="no Alembic environment"):
        await run_migrations(sqlite_database_url, tmp_path, version_table="x_alembic_version")


@pytest.mark.parametrize("url", ["sqlite+aiosqlite:///:memory:", "sqlite+aiosqlite://"])
async def test_an_in_memory_sqlite_database_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="in-memory SQLite database"):
        await run_migrations(url, SERVICEKIT_MIGRATIONS, version_table=SERVICEKIT_VERSION_TABLE)


async def test_replicas_starting_together_on_postgres_migrate_once(
    pg_database_url: str, service_migrations: Path
) -> None:
    # Replicas are processes: Alembic's context is process-global, so one process migrates
    # one database at a time, and the advisory lock orders the processes.
    replica = (
        "import asyncio, sys\n"
        "from servicekit.migrate import migrate_service_database\n"
        "asyncio.run(migrate_service_database(sys.argv[1], sys.argv[2], 'widgets_alembic_version'))"
    )
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            replica,
            pg_database_url,
            str(service_migrations),
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    outcomes = [await process.communicate() for process in processes]
    assert [process.returncode for process in processes] == [0] * 4, outcomes
    tables, versions = await tables_and_versions(
        pg_database_url, SERVICEKIT_VERSION_TABLE, "widgets_alembic_version"
    )
    assert {"outbox_events", "inbox_events", "widgets"} <= tables
    assert versions == ["0002", "w0001"]
