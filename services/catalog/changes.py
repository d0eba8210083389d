"""What a change to a catalog resource tells the world, written to the outbox in the writer's
transaction, so an event exists exactly when its change commits.

For every batch of stored, edited or removed resources of one collection, `store.py` calls
`begin(session, collection, befores, ids)` before touching the rows and
`Changes.announce(session, afters)` after. For each resource, in the batch's order, that emits
its events (events.py: the resource event, data-set membership changes, a new model's signed
event, subscription notifications), having matched the batch against every watcher of its
collection (watchers.py) in one query per side (before, after); a batch's events are written
in one statement: the same events, in the same order, as writing its resources one by one.

On PostgreSQL, `create(session, collection, document)` stores one new resource in place of
`begin`, the write and `announce`: the same rows and events, in one statement when nothing
watches the resource (the upsert and the resource event are data-modifying CTEs of the read
of the watchers). When that statement is all its transaction does, it commits on its own.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.cloudevents import CloudEvent
from servicekit.db import utc_now
from servicekit.outbox import outbox_events
from services.catalog import autocommit
from services.catalog.events import own_events, watcher_events
from services.catalog.rows import upsert_parameters, upsert_statement
from services.catalog.watchers import (
    SIGHTINGS,
    WATCHED_FILTERS,
    WATCHER_COLLECTIONS,
    WATCHERS_CACHE,
    Watchers,
    load_watchers,
    matching,
    sighted,
    watchers_of,
    watchers_query,
)

__all__ = [
    "Changes",
    "begin",
    "create",
]

# servicekit.outbox.enqueue's check: a subject one can publish to.
_SUBJECT = re.compile(r"^[^.*>\s]+(\.[^.*>\s]+)*$")


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


@dataclass
class Changes:
    """The changes of a batch of resources of one collection, between `begin` (before the
    writes) and `announce` (after)."""

    collection: str
    resource_ids: tuple[str, ...]
    befores: tuple[Mapping[str, Any] | None, ...]
    watchers: Watchers | None
    matched_before: Mapping[str, frozenset[str]]

    async def announce(
        self, session: AsyncSession, afters: Sequence[Mapping[str, Any] | None]
    ) -> None:
        """Write the events of every change, each resource's in turn, `afters[n]` being the
        new state of `resource_ids[n]` (None: removed)."""
        if self.collection in WATCHER_COLLECTIONS:
            session.info.pop(WATCHERS_CACHE, None)
        matched_after: Mapping[str, frozenset[str]] = {}
        if self.watchers is not None:
            stored = [
                rid
                for rid, after in zip(self.resource_ids, afters, strict=True)
                if after is not None
            ]
            matched_after = await matching(session, stored, self.watchers.filters)
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
        events = own_events(session, self.collection, resource_id, before, after)
        if self.watchers is not None:
            events += watcher_events(
                self.watchers,
                resource_id,
                before,
                after,
                self.matched_before.get(resource_id, frozenset()),
                matched_after.get(resource_id, frozenset()),
            )
        return events


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
        watchers = await load_watchers(session, collection)
        existing = [
            rid for rid, before in zip(resource_ids, befores, strict=True) if before is not None
        ]
        matched = await matching(session, existing, watchers.filters)
    return Changes(collection, tuple(resource_ids), tuple(befores), watchers, matched)


_EVENT = "event_"  # prefix of the outbox row's parameters in _created_statement


@functools.cache
def _created_statement(
    read_watchers: bool, announced: bool, unwatched: bool = False
) -> sa.Select[tuple[Any]]:
    """A new resource's upsert (and its first event) as data-modifying CTEs of the read of
    the watchers (or of nothing), built once; with `unwatched`, they write only if there is no
    data-set and no subscription at all."""
    read = watchers_query() if read_watchers else sa.select(sa.null())
    where = ~sa.exists(watchers_query()) if unwatched else None
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
    cache: dict[str, Watchers] = session.info.setdefault(WATCHERS_CACHE, {})
    watched = collection in WATCHED_FILTERS
    own = _outbox_rows(own_events(session, collection, resource_id, None, document))
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
        session.info.pop(WATCHERS_CACHE, None)
    events: list[tuple[str, CloudEvent]] = []
    if watched:
        if read_watchers:
            cache[collection] = watchers_of(collection, sighted(session, rows.scalars()))
        watchers = cache[collection]
        if watchers.filters:  # a subscription to a data-set hears of what the data-set matches
            matched = await matching(session, [resource_id], watchers.filters)
            events = watcher_events(
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
    if len(own) > 1 or collection in session.info.get(WATCHERS_CACHE, {}):
        return False
    sightings = session.info.get(SIGHTINGS)
    return not (collection in WATCHED_FILTERS and sightings is not None and sightings.seen)


async def _created_alone(
    session: AsyncSession, collection: str, parameters: dict[str, Any], announced: bool
) -> bool:
    """A new resource (and its one event) written by a statement that commits on its own, on a
    connection of the StatementPool in `session.info` (autocommit.py), if there is one, the
    session's transaction has not used the database yet and, for a watched collection, no
    data-set or subscription exists. False otherwise, having written nothing (and kept the
    watchers it read, for the transaction's statements to come)."""
    transaction = session.sync_session.get_transaction()
    pool: autocommit.StatementPool | None = session.info.get(autocommit.STATEMENTS)
    if (transaction is not None and transaction.connections) or pool is None:
        return False
    watched = collection in WATCHED_FILTERS
    statement = _created_alone_statement(session.bind.dialect, watched, announced)
    rows = await pool.execute(statement, parameters)
    if collection in WATCHER_COLLECTIONS:
        session.info.pop(WATCHERS_CACHE, None)
    # The pool's connections decode jsonb documents, as SQLAlchemy's do.
    watchers = sighted(session, (row[0] for row in rows)) if watched else []
    if watchers:
        cache = session.info.setdefault(WATCHERS_CACHE, {})
        cache[collection] = watchers_of(collection, watchers)
    return not watchers


@functools.lru_cache(maxsize=16)
def _created_alone_statement(
    dialect: Dialect, watched: bool, announced: bool
) -> autocommit.DriverStatement:
    statement = _created_statement(watched, announced, unwatched=watched)
    return autocommit.DriverStatement.compile(statement, dialect)
