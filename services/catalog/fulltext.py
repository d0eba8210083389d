"""Full text for the CIMI `==` operator, the same answers on PostgreSQL and SQLite.

A text is cut into tokens, the runs of letters and digits (everything else separates,
underscore included), compared case-insensitively; `attr=="w1 w2"` matches when every word of
the query is a token of the attribute's string, or of one same element of an array of strings,
in any order: no prefixes, no phrases (as Elasticsearch's `match` with operator `and`). A query
holding no token (`"%"`) matches nothing.

PostgreSQL: `catalog_tsvector(value)` (migration 0002) replaces every non-alphanumeric run with
a space and parses the rest with the `simple` configuration, so its parser sees only plain
words; `name` and `description` have GIN indexes over it, other attributes compute it on the
fly. SQLite: every string of every document is a row of `catalog_text` (its attribute's path,
an array's elements one row each), indexed by the FTS5 table `catalog_text_fts` (tokenizer
`unicode61 remove_diacritics 0`: letters and digits, case folded, accents kept, as `simple`),
written with the resource in put_resource's transaction. ASCII text tokenises identically on
both; other letters follow PostgreSQL's locale and Unicode 6.1 respectively.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from services.catalog.sqlparts import JsonPath, per_dialect
from services.catalog.tables import catalog_resources, catalog_text

__all__ = ["fulltext_match", "index_texts", "strings", "tokens", "unindex_texts"]

_TOKEN = re.compile(r"[^\W_]+")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _quoted(key: str | int) -> sa.ColumnElement[Any]:
    return sa.literal_column("'" + str(key).replace("'", "''") + "'")


def fulltext_match(path: JsonPath, text: str) -> ColumnElement[bool]:
    words = tokens(text)
    if not words:
        return sa.false()
    # PostgreSQL: the key path written literally, so that the expression is the GIN index's.
    value: ColumnElement[Any] = path.document
    for key in path.keys:
        value = value.op("->")(_quoted(key))
    query = sa.func.plainto_tsquery(
        sa.literal_column("'simple'"), sa.bindparam(None, " ".join(words), sa.Text())
    )
    element = sa.func.catalog_tsvector(sa.literal_column("element.value")).op("@@")(query)
    postgresql = sa.and_(
        sa.func.catalog_tsvector(value).op("@@")(query),
        sa.or_(path.is_("string"), path.any_element(element)),
    )
    fts = sa.table("catalog_text_fts")
    matching = (
        sa.select(sa.literal_column("rowid"))
        .select_from(fts)
        .where(
            sa.literal_column("catalog_text_fts").op("MATCH")(
                sa.bindparam(None, " ".join(f'"{w}"' for w in words), sa.Text())
            )
        )
    )
    sqlite = catalog_resources.c.id.in_(
        sa.select(catalog_text.c.resource_id).where(
            catalog_text.c.path == "/".join(str(key) for key in path.keys),
            catalog_text.c.entry.in_(matching),
        )
    )
    return per_dialect(postgresql, sqlite)


def strings(value: Any, keys: tuple[str, ...] = ()) -> Iterator[tuple[str, str]]:
    """(attribute path, text) of every string in a document that holds a token; an array's
    strings one by one; arrays of objects are not flattened, as for every operator."""
    if isinstance(value, str) and keys:
        if tokens(value):
            yield "/".join(keys), value
    elif isinstance(value, dict):
        for key, item in value.items():
            if "/" not in key:
                yield from strings(item, (*keys, key))
    elif isinstance(value, list) and keys:
        for item in value:
            if isinstance(item, str) and tokens(item):
                yield "/".join(keys), item


def _sqlite(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "sqlite"


async def unindex_texts(session: AsyncSession, resource_ids: list[str]) -> None:
    if _sqlite(session) and resource_ids:
        await session.execute(
            sa.delete(catalog_text).where(catalog_text.c.resource_id.in_(resource_ids))
        )


async def index_texts(session: AsyncSession, documents: list[dict[str, Any]]) -> None:
    """SQLite: record the strings of freshly written documents (after `unindex_texts`)."""
    if not _sqlite(session):
        return
    rows = [
        {"resource_id": document["id"], "path": path, "text": text}
        for document in documents
        for path, text in strings(document)
    ]
    if rows:
        await session.execute(sa.insert(catalog_text), rows)
