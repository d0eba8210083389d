"""The watchers of a collection's resources: its data-sets (by their filter for it) and its
subscriptions (by their own filter, or their data-set's), and which of them a batch of
stored rows matches.

Membership is decided by the filter alone, evaluated in SQL on the stored row (the same
compiler as searches, so a member is exactly what a search would find); who may see the
resource is applied when a subscription is notified. A row's membership depends on that row
only, so a batch is matched against every watcher (data-set, subscription) of its collection
in one query per side (before, after). Watchers are read once per transaction; their filters
are parsed and compiled once per process (by text), except geo terms, resolved per batch. Fine
for thousands of watchers, not for millions.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.cimi_filter import Filter, GeoComparison, parse_filter
from servicekit.errors import ExtractError
from services.catalog.filters import compile_filter
from services.catalog.geo import geo_comparisons, geo_matches
from services.catalog.tables import catalog_resources

__all__ = [
    "SIGHTINGS",
    "WATCHED_FILTERS",
    "WATCHERS_CACHE",
    "WATCHER_COLLECTIONS",
    "WatcherSightings",
    "Watchers",
    "load_watchers",
    "matching",
    "sighted",
    "watchers_of",
    "watchers_query",
]

WATCHED_FILTERS = {"data-object": "data-object-filter", "data-record": "data-record-filter"}
"""The collections data-sets and subscriptions watch, with the data-set attribute for each."""
WATCHER_COLLECTIONS = frozenset({"data-set", "subscription"})
"""Collections whose writes change the watchers, and so the events of the writes after them."""

SIGHTINGS = "catalog.watcher-sightings"
"""Key of the process's WatcherSightings in `session.info` (see session_factory), if any."""

WATCHERS_CACHE = "catalog.watchers"
"""Key of the transaction's watchers, by collection, in `session.info` (see load_watchers)."""
_COLUMNS_PER_QUERY = 500  # SQLite allows 2,000 result columns
_IDS_PER_QUERY = 500  # bound one by one: far below SQLite's and asyncpg's parameter limits
_CACHED_FILTERS = 4096  # distinct watcher filter texts kept parsed and compiled


@dataclass(frozen=True)
class _Watcher:
    """A data-set's filter or a subscription's (a subscription without filter watches all)."""

    id: str
    text: str | None
    tree: Filter | None
    geo: tuple[GeoComparison, ...] = ()


def _watcher(watcher_id: str, text: Any) -> _Watcher:
    tree = _parsed(text)
    if tree is None:
        return _Watcher(watcher_id, None, None)
    return _Watcher(watcher_id, text, tree, tuple(geo_comparisons(tree)))


@dataclass(frozen=True)
class Watchers:
    data_sets: tuple[_Watcher, ...]
    subscriptions: tuple[Mapping[str, Any], ...]
    """Every subscription (those on data-sets too), as stored."""
    filters: tuple[_Watcher, ...] = field(init=False)
    """The data-sets, then the subscriptions with a filter of their own."""

    def __post_init__(self) -> None:
        on_filters = tuple(
            _watcher(doc["id"], doc.get("filter"))
            for doc in self.subscriptions
            if "data-set" not in doc
        )
        object.__setattr__(self, "filters", self.data_sets + on_filters)


def _parsed(text: Any) -> Filter | None:
    if not isinstance(text, str) or not text.strip():
        return None
    return _parse(text)


@functools.lru_cache(maxsize=_CACHED_FILTERS)
def _parse(text: str) -> Filter | None:
    try:
        return parse_filter(text)
    except ExtractError:  # stored filters were checked on write; a grammar change may not match
        return None


@functools.lru_cache(maxsize=_CACHED_FILTERS)
def _compiled(text: str) -> sa.ColumnElement[bool]:
    """A geo-free watcher filter as SQL: the same for every change, so built once (building
    it took longer than evaluating it)."""
    tree = _parse(text)
    assert tree is not None
    return compile_filter(tree)


@functools.cache
def watchers_query() -> sa.Select[tuple[Any]]:
    """Every data-set and subscription, built once: a write is too cheap to build it again.

    The collections are written as literals, not bound: PostgreSQL may plan a prepared
    statement once for any value (a generic plan), and for `collection = $1` that is a scan of
    the whole table, where `collection IN ('data-set', 'subscription')` reads an index."""
    names = (sa.literal_column(f"'{name}'") for name in sorted(WATCHER_COLLECTIONS))
    return sa.select(catalog_resources.c.document).where(catalog_resources.c.collection.in_(names))


@dataclass
class WatcherSightings:
    """Whether the last read of the watchers, in any session of the process, found one: a
    hint that a new resource will not be written alone (create), so it is not tried. A wrong
    hint costs a statement, never an event."""

    seen: bool = False


def sighted(session: AsyncSession, documents: Iterable[Mapping[str, Any]]) -> list[Any]:
    """The watchers just read (data-sets and subscriptions), noted in the sightings."""
    read = list(documents)
    sightings = session.info.get(SIGHTINGS)
    if sightings is not None:
        sightings.seen = bool(read)
    return read


async def load_watchers(session: AsyncSession, collection: str) -> Watchers:
    """The collection's watchers, read once per transaction (writes of watchers forget them)."""
    cache: dict[str, Watchers] = session.info.setdefault(WATCHERS_CACHE, {})
    if collection not in cache:
        rows = await session.execute(watchers_query())
        cache[collection] = watchers_of(collection, sighted(session, rows.scalars()))
    return cache[collection]


def watchers_of(collection: str, documents: Iterable[Mapping[str, Any]]) -> Watchers:
    """The watchers of `collection` among the data-sets and subscriptions `documents`."""
    attribute = WATCHED_FILTERS[collection]
    data_sets, subscriptions = [], []
    for document in documents:
        if document["resource-type"] == "data-set":
            watcher = _watcher(document["id"], document.get(attribute))
            if watcher.tree is not None:
                data_sets.append(watcher)
        elif document.get("collection") == collection or "data-set" in document:
            subscriptions.append(document)
    return Watchers(tuple(data_sets), tuple(subscriptions))


async def _condition(
    session: AsyncSession, scope: sa.ColumnElement[bool], watcher: _Watcher
) -> sa.ColumnElement[bool]:
    if watcher.tree is None:
        return sa.true()
    if not watcher.geo:
        assert watcher.text is not None
        return _compiled(watcher.text)
    geo = {g: await geo_matches(session, scope, g) for g in watcher.geo}
    return compile_filter(watcher.tree, geo_matches=geo)


async def matching(
    session: AsyncSession, resource_ids: Sequence[str], watchers: Sequence[_Watcher]
) -> dict[str, frozenset[str]]:
    """For each stored row of `resource_ids`, the ids of the watchers whose filter it matches
    (none for an id with no row)."""
    matched: dict[str, set[str]] = {resource_id: set() for resource_id in resource_ids}
    ids = list(matched)
    for first_id in range(0, len(ids) if watchers else 0, _IDS_PER_QUERY):
        # `id IN (…)` of bound ids: both planners read the rows through the primary key.
        scope = catalog_resources.c.id.in_(ids[first_id : first_id + _IDS_PER_QUERY])
        for start in range(0, len(watchers), _COLUMNS_PER_QUERY):
            chunk = watchers[start : start + _COLUMNS_PER_QUERY]
            columns = [
                sa.case((await _condition(session, scope, watcher), 1), else_=0).label(f"w{n}")
                for n, watcher in enumerate(chunk)
            ]
            statement = sa.select(catalog_resources.c.id, *columns).where(scope)
            for resource_id, *hits in await session.execute(statement):
                matched[resource_id].update(w.id for w, hit in zip(chunk, hits, strict=True) if hit)
    return {resource_id: frozenset(ids) for resource_id, ids in matched.items()}
