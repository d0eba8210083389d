"""What a change to a catalog resource tells the world, written to the outbox in the writer's
transaction, so an event exists exactly when its change commits.

For every stored, edited or removed resource, `store.py` calls `begin(session, before)` before
touching the row and `Change.announce(session, after)` after. That emits:

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
resource is applied when a subscription is notified. Every watcher (data-set, subscription) of
a collection is evaluated on every change: one query per change and side, fine for thousands
of watchers, not for millions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.cloudevents import CloudEvent
from servicekit.errors import ExtractError
from servicekit.outbox import enqueue
from servicekit.security import Identity, SigningKey, sign_event
from services.catalog import acl
from services.catalog.filters import Filter, parse_filter
from services.catalog.geo import geo_comparisons, geo_matches
from services.catalog.query import compile_filter
from services.catalog.tables import catalog_resources

__all__ = [
    "ANNOUNCED",
    "EVENT_SIGNER",
    "SOURCE",
    "WATCHED_FILTERS",
    "Change",
    "begin",
    "subscription_subject",
]

SOURCE = "/catalog"
EVENT_SIGNER = "catalog.event-signer"
"""Key of the catalog's event-signing SigningKey in `session.info` (see session_factory)."""

ANNOUNCED = frozenset({"data-object", "data-record", "data-set"})
WATCHED_FILTERS = {"data-object": "data-object-filter", "data-record": "data-record-filter"}
"""The collections data-sets and subscriptions watch, with the data-set attribute for each."""

_WATCHERS_CACHE = "catalog.watchers"
_COLUMNS_PER_QUERY = 500  # SQLite allows 2,000 result columns


def subscription_subject(subscription_id: str) -> str:
    """`subscription/<uuid>` → `catalog.subscription.<uuid>`."""
    return f"catalog.subscription.{subscription_id.partition('/')[2]}"


@dataclass(frozen=True)
class _Watcher:
    """A data-set's filter or a subscription's (a subscription without filter watches all)."""

    id: str
    tree: Filter | None


@dataclass(frozen=True)
class _Watchers:
    data_sets: tuple[_Watcher, ...]
    subscriptions: tuple[Mapping[str, Any], ...]
    """Every subscription (those on data-sets too), as stored."""

    def filters(self) -> tuple[_Watcher, ...]:
        on_filters = tuple(
            _Watcher(doc["id"], _parsed(doc.get("filter")))
            for doc in self.subscriptions
            if "data-set" not in doc
        )
        return self.data_sets + on_filters


def _parsed(text: Any) -> Filter | None:
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        return parse_filter(text)
    except ExtractError:  # stored filters were checked on write; a grammar change may not match
        return None


async def _load_watchers(session: AsyncSession, collection: str) -> _Watchers:
    """The collection's watchers, read once per transaction (writes of watchers forget them)."""
    cache: dict[str, _Watchers] = session.info.setdefault(_WATCHERS_CACHE, {})
    if collection in cache:
        return cache[collection]
    attribute = WATCHED_FILTERS[collection]
    rows = await session.execute(
        sa.select(catalog_resources.c.document).where(
            catalog_resources.c.collection.in_(("data-set", "subscription"))
        )
    )
    data_sets, subscriptions = [], []
    for document in rows.scalars():
        if document["resource-type"] == "data-set":
            tree = _parsed(document.get(attribute))
            if tree is not None:
                data_sets.append(_Watcher(document["id"], tree))
        elif document.get("collection") == collection or "data-set" in document:
            subscriptions.append(document)
    watchers = _Watchers(tuple(data_sets), tuple(subscriptions))
    cache[collection] = watchers
    return watchers


async def _matching(
    session: AsyncSession, resource_id: str, watchers: Sequence[_Watcher]
) -> frozenset[str]:
    """Ids of the watchers whose filter the stored row `resource_id` matches."""
    scope = catalog_resources.c.id == resource_id
    matched: set[str] = set()
    for start in range(0, len(watchers), _COLUMNS_PER_QUERY):
        chunk = watchers[start : start + _COLUMNS_PER_QUERY]
        columns = []
        for n, watcher in enumerate(chunk):
            if watcher.tree is None:
                condition: sa.ColumnElement[bool] = sa.true()
            else:
                geo = {
                    g: await geo_matches(session, scope, g) for g in geo_comparisons(watcher.tree)
                }
                condition = compile_filter(watcher.tree, geo_matches=geo)
            columns.append(sa.case((condition, 1), else_=0).label(f"w{n}"))
        row = (await session.execute(sa.select(*columns).where(scope))).one_or_none()
        if row is not None:
            matched.update(watcher.id for watcher, hit in zip(chunk, row, strict=True) if hit)
    return frozenset(matched)


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


@dataclass
class Change:
    """One resource's change between `begin` (before the write) and `announce` (after)."""

    collection: str
    resource_id: str
    before: Mapping[str, Any] | None
    watchers: _Watchers | None
    matched_before: frozenset[str]

    async def announce(self, session: AsyncSession, after: Mapping[str, Any] | None) -> None:
        if self.collection in ("data-set", "subscription"):
            session.info.pop(_WATCHERS_CACHE, None)
        kind = _kind(self.before, after)
        current = after if after is not None else self.before
        assert current is not None
        if self.collection in ANNOUNCED:
            data = {"resource-id": self.resource_id, "resource": dict(current)}
            if kind not in ("created", "updated", "deleted") and self.before is not None:
                data["previous-state"] = self.before.get("state")
            subject = f"catalog.{self.collection}.{kind}"
            await enqueue(session, subject, _event(subject, self.resource_id, data))
        if _is_model(after) and not _is_model(self.before):
            assert after is not None
            signer = session.info.get(EVENT_SIGNER)
            event = _model_event(after, signer)
            await enqueue(session, "catalog.model.published", event)
        if self.watchers is not None:
            await self._notify_watchers(session, after, kind)

    async def _notify_watchers(
        self, session: AsyncSession, after: Mapping[str, Any] | None, kind: str
    ) -> None:
        assert self.watchers is not None
        matched_after = (
            await _matching(session, self.resource_id, self.watchers.filters())
            if after is not None
            else frozenset()
        )
        changes: dict[str, str] = {}
        for watcher_id in self.matched_before | matched_after:
            if watcher_id not in self.matched_before:
                changes[watcher_id] = "entered"
            elif watcher_id not in matched_after:
                changes[watcher_id] = "left"
            else:
                changes[watcher_id] = "updated"
        for data_set in self.watchers.data_sets:
            change = changes.get(data_set.id)
            if change is not None:
                data = {
                    "data-set": data_set.id,
                    "resource-id": self.resource_id,
                    "change": change,
                    "resource-event": kind,
                }
                subject = "catalog.data-set.changed"
                await enqueue(session, subject, _event(subject, data_set.id, data))
        for subscription in self.watchers.subscriptions:
            change = changes.get(subscription.get("data-set") or subscription["id"])
            if change is not None:
                await self._notify(session, subscription, change, kind, after)

    async def _notify(
        self,
        session: AsyncSession,
        subscription: Mapping[str, Any],
        change: str,
        kind: str,
        after: Mapping[str, Any] | None,
    ) -> None:
        """Tell the subscription's owner, with the resource as the owner may see it, if at all."""
        seen = after if after is not None and change != "left" else self.before
        assert seen is not None
        owner = Identity(
            principal=subscription["created-by"],
            claims=frozenset(subscription.get("subscriber-claims", ())),
        )
        view = acl.visible_view(seen, acl.rights(owner, seen.get("acl", {})))
        if view is None:
            return
        data = {
            "subscription": subscription["id"],
            "resource-id": self.resource_id,
            "change": change,
            "resource-event": kind,
            "resource": view,
        }
        if "data-set" in subscription:
            data["data-set"] = subscription["data-set"]
        subject = subscription_subject(subscription["id"])
        await enqueue(session, subject, _event(subject, subscription["id"], data))


async def begin(
    session: AsyncSession, collection: str, before: Mapping[str, Any] | None, resource_id: str
) -> Change:
    """Note what the stored row `resource_id` matches before it is written or removed."""
    watchers = None
    matched: frozenset[str] = frozenset()
    if collection in WATCHED_FILTERS:
        watchers = await _load_watchers(session, collection)
        if before is not None:
            matched = await _matching(session, resource_id, watchers.filters())
    return Change(collection, resource_id, before, watchers, matched)
