"""The events of one change to a catalog resource, given its states before and after (None:
absent) and, for a watched collection, the watchers it matched before and after:

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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.cloudevents import CloudEvent
from servicekit.security import Identity, SigningKey, sign_event
from services.catalog import acl
from services.catalog.watchers import Watchers

__all__ = [
    "ANNOUNCED",
    "EVENT_SIGNER",
    "SOURCE",
    "own_events",
    "subscription_subject",
    "watcher_events",
]

SOURCE = "/catalog"
EVENT_SIGNER = "catalog.event-signer"
"""Key of the catalog's event-signing SigningKey in `session.info` (see session_factory)."""

ANNOUNCED = frozenset({"data-object", "data-record", "data-set"})


def subscription_subject(subscription_id: str) -> str:
    """`subscription/<uuid>` → `catalog.subscription.<uuid>`."""
    return f"catalog.subscription.{subscription_id.partition('/')[2]}"


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


def own_events(
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


def watcher_events(
    watchers: Watchers,
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
