"""Server-side data-sets: `GET /api/data-set/<uuid>/members` answers the data-set's filters as
searches, for the caller, with the caller's own filter, orderby, paging and aggregations on top
and an optional time window, plus counts and total bytes per collection.

The window (`from`, `to`, ISO dates, `from` inclusive, `to` exclusive) applies to `timestamp`
for data-records (when the data was taken) and to `created` for data-objects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.errors import InvalidInput
from servicekit.security import Identity
from services.catalog import acl, resources
from services.catalog.aggregations import aggregate
from services.catalog.filters import normalize_timestamp
from services.catalog.schemas import SearchParams, collection_spec
from services.catalog.watchers import WATCHED_FILTERS

__all__ = ["TIME_ATTRIBUTE", "members", "parse_window"]

TIME_ATTRIBUTE = {"data-record": "timestamp", "data-object": "created"}
_SECTIONS = {"data-record": "data-records", "data-object": "data-objects"}


def _instant(name: str, text: str) -> str:
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{name}: expected an ISO date, got {text!r:.40}") from None
    if moment.tzinfo is None:
        raise InvalidInput(f"{name}: the date needs a time zone (Z or ±hh:mm)")
    return normalize_timestamp(moment)


def parse_window(start: str | None, end: str | None) -> tuple[str | None, str | None]:
    """The window's bounds as filter-ready timestamps; InvalidInput if malformed or empty."""
    window = (
        _instant("from", start) if start else None,
        _instant("to", end) if end else None,
    )
    if window[0] and window[1] and window[0] >= window[1]:
        raise InvalidInput("from: the window is empty (from must precede to)")
    return window


def _window_filter(collection: str, window: tuple[str | None, str | None]) -> list[str]:
    attribute = TIME_ATTRIBUTE[collection]
    start, end = window
    terms = []
    if start:
        terms.append(f"{attribute}>={start}")
    if end:
        terms.append(f"{attribute}<{end}")
    return terms


async def members(
    *,
    session: AsyncSession,
    data_set_id: str,
    identity: Identity,
    params: SearchParams,
    aggregations: Sequence[str] = (),
    collections: Sequence[str] = tuple(WATCHED_FILTERS),
    window: tuple[str | None, str | None] = (None, None),
) -> dict[str, Any]:
    """The members of a data-set the caller may view, per collection, with counts and bytes."""
    data_set = await resources.load_document(session, data_set_id)
    acl.require(identity, data_set.get("acl", {}), "view-data", data_set_id)
    response: dict[str, Any] = {
        "id": f"{data_set_id}/members",
        "resource-type": "data-set-members",
        "data-set": data_set_id,
        "count": 0,
        "bytes": 0,
    }
    for collection in collections:
        own_filter = data_set.get(WATCHED_FILTERS[collection])
        if not own_filter:
            continue
        filters = (*params.filters, own_filter, *_window_filter(collection, window))
        section = await resources.search_resources(
            session=session,
            spec=collection_spec(collection),  # type: ignore[arg-type]
            identity=identity,
            params=dataclasses.replace(params, filters=filters),
            aggregations=aggregations,
        )
        total = await aggregate(
            session,
            collection=collection,
            identity=identity,
            filter_text=filters,
            specs=["sum:bytes"],
        )
        section["bytes"] = int(total["sum:bytes"]["value"] or 0)
        for key in ("id", "resource-type", "acl", "operations"):
            section.pop(key, None)
        response[_SECTIONS[collection]] = section
        response["count"] += section["count"]
        response["bytes"] += section["bytes"]
    return response
