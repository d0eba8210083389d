"""Cursor pages past the 10,000-result window, on SQLite and PostgreSQL: every resource exactly
once, in order, with an exact count."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

import services.catalog
from servicekit.db import create_engine, session_factory
from servicekit.errors import InvalidInput
from servicekit.migrate import migrate_service_database
from servicekit.security import ADMIN_CLAIM, Identity
from services.catalog.query import MAX_WINDOW, search
from services.catalog.rows import insert_resources

MIGRATIONS = Path(services.catalog.__file__).with_name("migrations")
COLLECTION = "data-record"
ADMIN = Identity("user/root", frozenset({ADMIN_CLAIM}))
ACL = {"owners": ["user/alice"]}
COUNT = MAX_WINDOW + 1_234


def _value(n: int) -> Any:
    """Numbers with many ties, some strings, some missing: every branch of the sort."""
    if n % 15 == 0:
        return None
    if n % 10 == 0:
        return f"s{n % 7}"
    return n % 97 + (0.5 if n % 3 == 0 else 0)


def _document(n: int) -> dict[str, Any]:
    document = {"id": f"{COLLECTION}/{n:05d}", "acl": ACL, "odd": n % 2 == 1}
    if (value := _value(n)) is not None:
        document["bytes"] = document["size"] = value
    return document


def _expected(descending: bool, wanted: list[int]) -> list[str]:
    """Numbers first, then strings, then the rest; either direction; ids ascending on ties."""

    def key(n: int) -> tuple[Any, ...]:
        value = _value(n)
        if isinstance(value, int | float):
            return (0, -value if descending else value, "", n)
        if isinstance(value, str):
            flipped = "".join(chr(0x10FFFF - ord(c)) for c in value)
            return (1, 0, flipped if descending else value, n)
        return (2, 0, "", n)

    return [f"{COLLECTION}/{n:05d}" for n in sorted(wanted, key=key)]


@pytest.fixture
async def session(database_url: str) -> AsyncIterator[AsyncSession]:
    await migrate_service_database(database_url, MIGRATIONS, "catalog_alembic_version")
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            documents = [_document(n) for n in range(COUNT)]
            for start in range(0, COUNT, 2_000):
                await insert_resources(session, documents[start : start + 2_000])
            await session.commit()
            yield session
    finally:
        await engine.dispose()


async def _walk(session: AsyncSession, **kw: Any) -> tuple[list[str], set[int]]:
    seen: list[str] = []
    counts, cursor = set(), None
    while True:
        page = await search(
            session, collection=COLLECTION, identity=ADMIN, last=3_000, after=cursor, **kw
        )
        counts.add(page.count)
        seen += [resource["id"] for resource in page.resources]
        if page.next is None:
            return seen, counts
        cursor = page.next


async def test_cursors_walk_every_resource_once_in_order(session: AsyncSession) -> None:
    # One test, so the 11,234 resources are written once per backend.
    for orderby in ("bytes:desc", "size:asc", None):
        seen, counts = await _walk(session, orderby=orderby)
        if orderby is None:
            expected = [f"{COLLECTION}/{n:05d}" for n in range(COUNT)]
        else:
            expected = _expected(orderby.endswith(":desc"), list(range(COUNT)))
        assert counts == {COUNT}, orderby
        assert len(seen) == len(set(seen)) == COUNT, orderby
        assert seen == expected, orderby

    seen, counts = await _walk(session, filter_text="odd=true and bytes!=null", orderby="bytes")
    wanted = [n for n in range(1, COUNT, 2) if _value(n) is not None]
    assert counts == {len(wanted)}
    assert seen == _expected(False, wanted)

    last = await search(
        session, collection=COLLECTION, identity=ADMIN, first=MAX_WINDOW, last=MAX_WINDOW
    )
    assert [r["id"] for r in last.resources] == [f"{COLLECTION}/{MAX_WINDOW - 1:05d}"]
    with pytest.raises(InvalidInput, match="cursor"):
        await search(session, collection=COLLECTION, identity=ADMIN, first=MAX_WINDOW + 1)
