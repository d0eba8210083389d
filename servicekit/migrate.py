"""Alembic migrations run programmatically at start-up: servicekit's tables, then the service's."""

from __future__ import annotations

import zlib
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from servicekit.db import create_engine, is_postgres

SERVICEKIT_MIGRATIONS = Path(__file__).with_name("migrations")
SERVICEKIT_VERSION_TABLE = "servicekit_alembic_version"


async def run_migrations(url: str, script_location: str | Path, *, version_table: str) -> None:
    """`alembic upgrade head` for one environment, recording its revision in `version_table`.

    On PostgreSQL the upgrade runs in one transaction holding an advisory lock, so replicas
    starting together migrate one after the other and the later ones find nothing to do.
    Alembic's context is process-global: within one process, migrate one database at a time.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ValueError(
            f"{url!r} is an in-memory SQLite database, which vanishes with the migration's "
            "connection; use a file (sqlite+aiosqlite:///path/to/db.sqlite)"
        )
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            if is_postgres(engine):
                await connection.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"),
                    {"key": _lock_key(version_table)},
                )
            await connection.run_sync(_upgrade, Path(script_location), version_table)
    finally:
        await engine.dispose()


async def migrate_service_database(
    url: str, service_script_location: str | Path, service_version_table: str
) -> None:
    """Bring a service's database to head: servicekit's environment first, then the service's."""
    if service_version_table == SERVICEKIT_VERSION_TABLE:
        raise ValueError(f"{SERVICEKIT_VERSION_TABLE!r} is servicekit's own version table")
    await run_migrations(url, SERVICEKIT_MIGRATIONS, version_table=SERVICEKIT_VERSION_TABLE)
    await run_migrations(url, service_script_location, version_table=service_version_table)


def run_env(target_metadata: sa.MetaData | None = None) -> None:
    """The body of every env.py: migrate on the connection `run_migrations` hands over."""
    from alembic import context  # only exists while Alembic runs an env.py

    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "this Alembic environment runs through servicekit.migrate.run_migrations(url, …)"
        )
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=context.config.attributes["version_table"],
        # SQLite alters tables by copying them; batch mode does that for ALTER operations.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _upgrade(connection: sa.Connection, script_location: Path, version_table: str) -> None:
    if not (script_location / "env.py").is_file():
        raise FileNotFoundError(f"no Alembic environment (env.py) in {script_location}")
    config = Config()
    # Config values go through configparser interpolation, where '%' is special.
    config.set_main_option("script_location", str(script_location).replace("%", "%%"))
    config.attributes["connection"] = connection
    config.attributes["version_table"] = version_table
    command.upgrade(config, "head")


def _lock_key(version_table: str) -> int:
    return zlib.crc32(f"extract-migrations:{version_table}".encode())
