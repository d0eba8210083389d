"""Migration 0002 on a catalog holding resources: their bounding boxes and (SQLite) their
strings are filled in, so geo and full-text filters find resources stored before it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

import services.catalog
from servicekit.db import JSONDocument, UTCDateTime, create_engine, session_factory
from servicekit.migrate import migrate_service_database
from servicekit.security import ADMIN_CLAIM, Identity
from services.catalog.query import search

MIGRATIONS = Path(services.catalog.__file__).with_name("migrations")
VERSION_TABLE = "catalog_alembic_version"
AT_0001 = sa.table(  # catalog_resources as revision 0001 made it
    "catalog_resources",
    sa.column("id", sa.Text()),
    sa.column("collection", sa.Text()),
    sa.column("document", JSONDocument),
    sa.column("created", UTCDateTime()),
    sa.column("updated", UTCDateTime()),
    sa.column("viewers", JSONDocument),
)
ADMIN = Identity("user/root", frozenset({ADMIN_CLAIM}))
OLD = [
    {"id": "place/a", "name": "Lake Geneva shore", "location": [6.14, 46.2]},
    {
        "id": "place/b",
        "name": "Bern old town",
        "geometry": {"type": "Point", "coordinates": [7.4, 47]},
    },
    {"id": "place/c", "name": "nowhere", "location": "not a point"},
]


def _upgrade_to(connection: sa.Connection, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    config.attributes["version_table"] = VERSION_TABLE
    command.upgrade(config, revision)


async def test_resources_stored_before_0002_are_found_after_it(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade_to, "0001")
            now = datetime(2026, 1, 1, tzinfo=UTC)
            rows = [
                {
                    "id": d["id"],
                    "collection": "place",
                    "document": d,
                    "created": now,
                    "updated": now,
                    "viewers": [],
                }
                for d in OLD
            ]
            await connection.execute(sa.insert(AT_0001), rows)
        await migrate_service_database(database_url, MIGRATIONS, VERSION_TABLE)
        geneva = "POLYGON ((6 46, 6.3 46, 6.3 46.4, 6 46.4, 6 46))"
        expected = {
            f"location within '{geneva}'": ["place/a"],
            f"geometry disjoint '{geneva}'": ["place/b"],
            "name=='geneva'": ["place/a"],
            "name=='old bern'": ["place/b"],
        }
        async with session_factory(engine)() as session:
            found = {
                text: [
                    r["id"]
                    for r in (
                        await search(session, collection="place", identity=ADMIN, filter_text=text)
                    ).resources
                ]
                for text in expected
            }
    finally:
        await engine.dispose()
    assert found == expected, json.dumps(found)


def _downgrade_to(connection: sa.Connection, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    config.attributes["version_table"] = VERSION_TABLE
    command.downgrade(config, revision)


async def test_0002_downgrades_to_0001_and_upgrades_again(database_url: str) -> None:
    await migrate_service_database(database_url, MIGRATIONS, VERSION_TABLE)
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_downgrade_to, "0001")

            def columns(sync: sa.Connection) -> set[str]:
                return {c["name"] for c in sa.inspect(sync).get_columns("catalog_resources")}

            assert await connection.run_sync(columns) == {
                "id",
                "collection",
                "document",
                "created",
                "updated",
                "viewers",
            }
    finally:
        await engine.dispose()
    await migrate_service_database(database_url, MIGRATIONS, VERSION_TABLE)
