"""The single write path of the catalog: every stored or removed resource passes through here,
so what must happen with every change (its events, data-set membership, subscriptions; see
changes.py) happens in one place, in the caller's transaction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.catalog import changes
from services.catalog.query import delete_resource, put_resource

__all__ = ["remove", "save"]


def _collection(resource_id: str) -> str:
    return resource_id.partition("/")[0]


async def save(
    session: AsyncSession, *, before: Mapping[str, Any] | None, after: dict[str, Any]
) -> None:
    """Store `after` (a new resource when `before` is None, else the new state of `before`)."""
    resource_id = after["id"]
    change = await changes.begin(session, _collection(resource_id), before, resource_id)
    await put_resource(session, after)
    await change.announce(session, after)


async def remove(session: AsyncSession, *, before: Mapping[str, Any]) -> None:
    """Delete the stored resource `before`."""
    resource_id = before["id"]
    change = await changes.begin(session, _collection(resource_id), before, resource_id)
    await delete_resource(session, resource_id)
    await change.announce(session, None)
