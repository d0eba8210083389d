"""What a change to a catalog resource tells the world, written to the outbox in the writer's
transaction, so an event exists exactly when its change commits.

For every batch of stored, edited or removed resources of one collection, `store.py` calls
`begin(session, collection, befores, ids)` before touching the rows and
`Changes.announce(session, afters)` after. For each resource, in the batch's order, that emits:

- `catalog.<collection>.<kind>` for data-object, data-record and data-set: `created`,
  `updated`, `deleted`, or, when a data-object's `state` changes, the new state in lower case
  (`catalog.data-object.uploading`, `catalog.data-object.ready`);
- `catalog.data-set.changed` for each data-set whose filter for that collection
  (`data-record-filter`, `data-object-filter`) the resource matches before or after the
  change, saying whether it `entered`, `left` or stayed (`updated`);
- `catalog.model.published`, ES256-signed, when a data-record gains `model:name` and
  `model:version`;
- `catalog.subscription.<uuid>` for each subscription the change concerns (its data-set changed,
  or its collection/filter matched before or after), carrying the resource as the
  subscription's owner may see it, and only if the owner may see it.

Membership is decided by the filter alone, evaluated in SQL on the stored row (the same
compiler as searches, so a member is exactly what a search would find); who may see the
resource is applied when a subscription is notified. A row's membership depends on that row
only, so a batch is matched against every watcher (data-set, subscription) of its collection
in one query per side (before, after), and its events are written in one statement: the same
events, in the same order, as writing its resources one by one. Watchers are read once per
transaction; their filters are parsed and compiled once per process (by text), except geo
terms, resolved per batch. Fine for thousands of watchers, not for millions.

On PostgreSQL, `create(session, collection, document)` stores one new resource in place of
`begin`, the write and `announce`: the same rows and events, in one statement when nothing
watches the resource (the upsert and the resource event are data-modifying CTEs of the read
of the watchers). When that statement is all its transaction does, it commits on its own.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from servicekit.cimi_filter import Filter, GeoComparison, parse_filter
from servicekit.cloudevents import CloudEvent
from servicekit.db import utc_now
from servicekit.errors import ExtractError
from servicekit.outbox import outbox_events
from servicekit.security import Identity, SigningKey, sign_event
from services.catalog import acl, autocommit
from services.catalog.geo import geo_comparisons, geo_matches
from services.catalog.query import compile_filter, upsert_parameters, upsert_statement
from services.catalog.tables import catalog_resources

__all__ = [
    "ANNOUNCED",
    "EVENT_SIGNER",
    "SIGHTINGS",
    "SOURCE",
    "WATCHED_FILTERS",
    "WATCHER_COLLECTIONS",
    "Changes",
    "WatcherSightings",
    "begin",
    "create",
    "subscription_subject",
]

SOURCE = "/catalog"
EVENT_SIGNER = "catalog.event-signer"
"""Key of the catalog's event-signing SigningKey in `session.info` (see session_factory)."""

ANNOUNCED = frozenset({"data-object", "data-record", "data-set"})
WATCHED_FILTERS = {"data-object": "data-object-filter", "data-record": "data-record-filter"}
"""The collections data-sets and subscriptions watch, with the data-set attribute for each."""
WATCHER_COLLECTIONS = frozenset({"data-set", "subscription"})
"""Collections whose writes change the watchers, and so the events of the writes after them."""

SIGHTINGS = "catalog.watcher-sightings"
"""Key of the process's WatcherSightings in `session.info` (see session_factory), if any."""

_WATCHERS_CACHE = "catalog.watchers"
_COLUMNS_PER_QUERY = 500  # SQLite allows 2,000 result columns
_IDS_PER_QUERY = 500  # bound one by one: far below SQLite's and asyncpg's parameter limits
_CACHED_FILTERS = 4096  # distinct watcher filter texts kept parsed and compiled
# servicekit.outbox.enqueue's check: a subject one can publish to.
_SUBJECT = re.compile(r"^[^.*>\s]+(\.[^.*>\s]+)*$")


def subscription_subject(subscription_id: str) -> str:
    """`subscription/<uuid>` → `catalog.subscription.<uuid>`."""
    return f"catalog.subscription.{subscription_id.partition('/')[2]}"


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
class _Watchers:
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
def _watchers_query() -> sa.Select[tuple[Any]]:
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


def _sighted(session: AsyncSession, documents: Iterable[Mapping[str, Any]]) -> list[Any]:
    """The watchers just read (data-sets and subscriptions), noted in the sightings."""
    read = list(documents)
    sightings = session.info.get(SIGHTINGS)
    if sightings is not None:
        sightings.seen = bool(read)
    return read


async def _load_watchers(session: AsyncSession, collection: str) -> _Watchers:
    """The collection's watchers, read once per transaction (writes of watchers forget them)."""
    cache: dict[str, _Watchers] = session.info.setdefault(_WATCHERS_CACHE, {})
    if collection not in cache:
        rows = await session.execute(_watchers_query())
        cache[collection] = _watchers_of(collection, _sighted(session, rows.scalars()))
    return cache[collection]


def _watchers_of(collection: str, documents: Iterable[Mapping[str, Any]]) -> _Watchers:
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
    return _Watchers(tuple(data_sets), tuple(subscriptions))


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


async def _matching(
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


def _kind(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str:
    if before is None:
        return "created"
    if after is None:
        return "deleted"
    state = after.get("state")
    if after["resource-type"] == "data-object" and state != before.get("state") and state:
        return str(state).lower()
    return "updated"


def _event(subject: str, resource_id: str, data: Mapping[str, Any]) -> CloudEvent:
    return CloudEvent(type=subject, source=SOURCE, subject=resource_id, data=dict(data))


def _is_model(document: Mapping[str, Any] | None) -> bool:
    return (
        document is not None
        and document.get("resource-type") == "data-record"
        and isinstance(document.get("model:name"), str)
        and document.get("model:version") is not None
    )


def _model_event(document: Mapping[str, Any], signer: SigningKey | None) -> CloudEvent:
    if signer is None:
        raise RuntimeError(
            f"no event-signing key in the session's info[{EVENT_SIGNER!r}]: "
            "model events must be signed"
        )
    data = {
        "name": document["model:name"],
        "version": document["model:version"],
        "hash-algo": document.get("model:hash-algo"),
        "data-record": document["id"],
        "data-object": document.get("resource:object"),
    }
    return sign_event(_event("catalog.model.published", document["id"], data), signer)


def _outbox_rows(events: Sequence[tuple[str, CloudEvent]]) -> list[dict[str, Any]]:
    """The outbox rows servicekit.outbox.enqueue would write for each (subject, event)."""
    for subject, _ in events:
        if not _SUBJECT.match(subject):
            raise ValueError(f"subject {subject!r} is not a NATS subject one can publish to")
    return [
        {
            "id": event.id,
            "subject": subject,
            "payload": event.to_json(),
            "created_at": utc_now(),
            "attempts": 0,
        }
        for subject, event in events
    ]


async def _enqueue_all(session: AsyncSession, events: Sequence[tuple[str, CloudEvent]]) -> None:
    """servicekit.outbox.enqueue of each (subject, event) in turn, as one statement."""
    if rows := _outbox_rows(events):
        await session.execute(sa.insert(outbox_events), rows)


def _own_events(
    session: AsyncSession,
    collection: str,
    resource_id: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
) -> list[tuple[str, CloudEvent]]:
    """The events a change tells of itself: its resource event and a new model's."""
    kind = _kind(before, after)
    current = after if after is not None else before
    assert current is not None
    events = []
    if collection in ANNOUNCED:
        data = {"resource-id": resource_id, "resource": dict(current)}
        if kind not in ("created", "updated", "deleted") and before is not None:
            data["previous-state"] = before.get("state")
        subject = f"catalog.{collection}.{kind}"
        events.append((subject, _event(subject, resource_id, data)))
    if _is_model(after) and not _is_model(before):
        assert after is not None
        signer = session.info.get(EVENT_SIGNER)
        events.append(("catalog.model.published", _model_event(after, signer)))
    return events


@dataclass
class Changes:
    """The changes of a batch of resources of one collection, between `begin` (before the
    writes) and `announce` (after)."""

    collection: str
    resource_ids: tuple[str, ...]
    befores: tuple[Mapping[str, Any] | None, ...]
    watchers: _Watchers | None
    matched_before: Mapping[str, frozenset[str]]

    async def announce(
        self, session: AsyncSession, afters: Sequence[Mapping[str, Any] | None]
    ) -> None:
        """Write the events of every change, each resource's in turn, `afters[n]` being the
        new state of `resource_ids[n]` (None: removed)."""
        if self.collection in WATCHER_COLLECTIONS:
            session.info.pop(_WATCHERS_CACHE, None)
        matched_after: Mapping[str, frozenset[str]] = {}
        if self.watchers is not None:
            stored = [
                rid
                for rid, after in zip(self.resource_ids, afters, strict=True)
                if after is not None
            ]
            matched_after = await _matching(session, stored, self.watchers.filters)
        events: list[tuple[str, CloudEvent]] = []
        for resource_id, before, after in zip(self.resource_ids, self.befores, afters, strict=True):
            events += self._events(session, resource_id, before, after, matched_after)
        await _enqueue_all(session, events)

    def _events(
        self,
        session: AsyncSession,
        resource_id: str,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
        matched_after: Mapping[str, frozenset[str]],
    ) -> list[tuple[str, CloudEvent]]:
        events = _own_events(session, self.collection, resource_id, before, after)
        if self.watchers is not None:
            events += _watcher_events(
                self.watchers,
                resource_id,
                before,
                after,
                self.matched_before.get(resource_id, frozenset()),
                matched_after.get(resource_id, frozenset()),
            )
        return events


def _watcher_events(
    watchers: _Watchers,
    resource_id: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    matched_before: frozenset[str],
    matched_after: frozenset[str],
) -> list[tuple[str, CloudEvent]]:
    """The data-sets' and subscriptions' events of a change, given the watchers it matched
    before and after."""
    kind = _kind(before, after)
    changes: dict[str, str] = {}
    for watcher_id in matched_before | matched_after:
        if watcher_id not in matched_before:
            changes[watcher_id] = "entered"
        elif watcher_id not in matched_after:
            changes[watcher_id] = "left"
        else:
            changes[watcher_id] = "updated"
    events = []
    for data_set in watchers.data_sets:
        change = changes.get(data_set.id)
        if change is not None:
            data = {
                "data-set": data_set.id,
                "resource-id": resource_id,
                "change": change,
                "resource-event": kind,
            }
            subject = "catalog.data-set.changed"
            events.append((subject, _event(subject, data_set.id, data)))
    for subscription in watchers.subscriptions:
        change = changes.get(subscription.get("data-set") or subscription["id"])
        if change is not None:
            seen = after if after is not None and change != "left" else before
            assert seen is not None
            event = _notification(subscription, resource_id, seen, change, kind)
            if event is not None:
                events.append(event)
    return events


def _notification(
    subscription: Mapping[str, Any],
    resource_id: str,
    seen: Mapping[str, Any],
    change: str,
    kind: str,
) -> tuple[str, CloudEvent] | None:
    """The subscription's event, with the resource as its owner may see it; None if it may
    see nothing of it."""
    owner = Identity(
        principal=subscription["created-by"],
        claims=frozenset(subscription.get("subscriber-claims", ())),
    )
    view = acl.visible_view(seen, acl.rights(owner, seen.get("acl", {})))
    if view is None:
        return None
    data = {
        "subscription": subscription["id"],
        "resource-id": resource_id,
        "change": change,
        "resource-event": kind,
        "resource": view,
    }
    if "data-set" in subscription:
        data["data-set"] = subscription["data-set"]
    subject = subscription_subject(subscription["id"])
    return subject, _event(subject, subscription["id"], data)


async def begin(
    session: AsyncSession,
    collection: str,
    befores: Sequence[Mapping[str, Any] | None],
    resource_ids: Sequence[str],
) -> Changes:
    """Note what the stored rows `resource_ids` (whose states are `befores`, None for a new
    one) match before they are written or removed."""
    watchers = None
    matched: Mapping[str, frozenset[str]] = {}
    if collection in WATCHED_FILTERS:
        watchers = await _load_watchers(session, collection)
        existing = [
            rid for rid, before in zip(resource_ids, befores, strict=True) if before is not None
        ]
        matched = await _matching(session, existing, watchers.filters)
    return Changes(collection, tuple(resource_ids), tuple(befores), watchers, matched)


_EVENT = "event_"  # prefix of the outbox row's parameters in _created_statement


@functools.cache
def _created_statement(
    read_watchers: bool, announced: bool, unwatched: bool = False
) -> sa.Select[tuple[Any]]:
    """A new resource's upsert (and its first event) as data-modifying CTEs of the read of
    the watchers (or of nothing), built once; with `unwatched`, they write only if there is no
    data-set and no subscription at all."""
    read = _watchers_query() if read_watchers else sa.select(sa.null())
    where = ~sa.exists(_watchers_query()) if unwatched else None
    statement = read.add_cte(upsert_statement(where).cte("written"))
    if announced:
        columns = ("id", "subject", "payload", "created_at", "attempts")  # as _outbox_rows
        row = sa.select(*(sa.bindparam(_EVENT + n, type_=outbox_events.c[n].type) for n in columns))
        event = sa.insert(outbox_events).from_select(
            columns, row if where is None else row.where(where)
        )
        statement = statement.add_cte(event.cte("announced"))
    return statement


async def create(
    session: AsyncSession,
    collection: str,
    document: dict[str, Any],
    *,
    ends_transaction: bool = False,
) -> None:
    """PostgreSQL: one new resource stored, with what `begin` and `announce` do around it, in
    one statement when nothing watches it: its upsert and its resource event are
    data-modifying CTEs of the read of the watchers (which sees the table as it was: a new
    resource is no watcher). A new model's event and the watchers' events, if any, follow in a
    second statement, so the outbox keeps their order.

    `ends_transaction`: the caller runs nothing after it in its transaction. Then, when that
    statement would be the transaction's only one, it runs as its own transaction (atomic as
    every statement is) past the session (autocommit.py), which spares the round trips of
    BEGIN and COMMIT and the session's CPU."""
    resource_id = document["id"]
    cache: dict[str, _Watchers] = session.info.setdefault(_WATCHERS_CACHE, {})
    watched = collection in WATCHED_FILTERS
    own = _outbox_rows(_own_events(session, collection, resource_id, None, document))
    parameters = upsert_parameters(document)
    if own:
        parameters.update({_EVENT + name: value for name, value in own[0].items()})
    alone = ends_transaction and _worth_writing_alone(session, collection, own)
    if alone and await _created_alone(session, collection, parameters, bool(own)):
        return
    read_watchers = watched and collection not in cache
    statement = _created_statement(read_watchers, bool(own))
    rows = await session.execute(statement, parameters)
    if collection in WATCHER_COLLECTIONS:
        session.info.pop(_WATCHERS_CACHE, None)
    events: list[tuple[str, CloudEvent]] = []
    if watched:
        if read_watchers:
            cache[collection] = _watchers_of(collection, _sighted(session, rows.scalars()))
        watchers = cache[collection]
        if watchers.filters:  # a subscription to a data-set hears of what the data-set matches
            matched = await _matching(session, [resource_id], watchers.filters)
            events = _watcher_events(
                watchers, resource_id, None, document, frozenset(), matched[resource_id]
            )
    rest = own[1:] + _outbox_rows(events)
    if rest:
        await session.execute(sa.insert(outbox_events), rest)


def _worth_writing_alone(
    session: AsyncSession, collection: str, own: Sequence[Mapping[str, Any]]
) -> bool:
    """Whether to try `_created_alone`: one event at most, and no watcher of a watched
    collection already read in this transaction or seen lately."""
    if len(own) > 1 or collection in session.info.get(_WATCHERS_CACHE, {}):
        return False
    sightings = session.info.get(SIGHTINGS)
    return not (collection in WATCHED_FILTERS and sightings is not None and sightings.seen)


async def _created_alone(
    session: AsyncSession, collection: str, parameters: dict[str, Any], announced: bool
) -> bool:
    """A new resource (and its one event) written by a statement that commits on its own, on a
    connection of its own (autocommit.py), if the session's transaction has not used the
    database yet and, for a watched collection, no data-set or subscription exists. False
    otherwise, having written nothing (and kept the watchers it read, for the transaction's
    statements to come)."""
    transaction = session.sync_session.get_transaction()
    engine = session.bind
    if (transaction is not None and transaction.connections) or not isinstance(engine, AsyncEngine):
        return False
    watched = collection in WATCHED_FILTERS
    statement = _created_alone_statement(engine.dialect, watched, announced)
    rows = await autocommit.execute(engine, statement, parameters)
    if collection in WATCHER_COLLECTIONS:
        session.info.pop(_WATCHERS_CACHE, None)
    # SQLAlchemy gave its pooled connections a jsonb codec that decodes documents.
    watchers = _sighted(session, (row[0] for row in rows)) if watched else []
    if watchers:
        cache = session.info.setdefault(_WATCHERS_CACHE, {})
        cache[collection] = _watchers_of(collection, watchers)
    return not watchers


@functools.lru_cache(maxsize=16)
def _created_alone_statement(
    dialect: Dialect, watched: bool, announced: bool
) -> autocommit.DriverStatement:
    statement = _created_statement(watched, announced, unwatched=watched)
    return autocommit.DriverStatement.compile(statement, dialect)
