"""The single write path of the catalog: every stored or removed resource passes through here,
so what must happen with every change (its events, data-set membership, subscriptions; see
changes.py) happens in one place, in the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.errors import InvalidInput
from services.catalog import changes
from services.catalog.rows import delete_resource, put_resources
from services.catalog.tables import HOT_ATTRIBUTES
from services.catalog.watchers import WATCHER_COLLECTIONS

__all__ = ["remove", "save", "save_many"]


def _collection(resource_id: str) -> str:
    return resource_id.partition("/")[0]


def _postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def save(
    session: AsyncSession,
    *,
    before: Mapping[str, Any] | None,
    after: dict[str, Any],
    ends_transaction: bool = False,
) -> None:
    """Store `after` (a new resource when `before` is None, else the new state of `before`).
    `ends_transaction`: the caller runs nothing after it in its transaction (see
    changes.create)."""
    await save_many(session, [(before, after)], ends_transaction=ends_transaction)


async def save_many(
    session: AsyncSession,
    writes: Sequence[tuple[Mapping[str, Any] | None, dict[str, Any]]],
    *,
    ends_transaction: bool = False,
) -> None:
    """`save` of each (before, after) of `writes` in turn, with the same rows and events in the
    same order, in a few statements whatever their number: the watchers read and matched once
    per side, one upsert, one outbox insert.

    That holds when no write can change what another one does: resources of one collection,
    each once, not data-sets or subscriptions (each of their writes changes the watchers of
    the next). Other batches are saved one by one. One new resource on PostgreSQL takes one
    statement when nothing watches it (changes.create)."""
    if not writes:
        return
    with _fitting_the_indexes():
        await _save_many(session, writes, ends_transaction=ends_transaction)


_PROGRAM_LIMIT_EXCEEDED = "54000"


@contextmanager
def _fitting_the_indexes() -> Iterator[None]:
    # PostgreSQL refuses an index row over ~2.7 kB ("program limit exceeded"): a hot attribute
    # that long is the caller's input to shorten, not a server fault.
    try:
        yield
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != _PROGRAM_LIMIT_EXCEEDED:
            raise
        raise InvalidInput(
            "a value is too long for the catalog's indexes: keep each of "
            f"{', '.join(sorted(HOT_ATTRIBUTES))} under 2,000 bytes",
            detail={"attributes": sorted(HOT_ATTRIBUTES)},
        ) from None


async def _save_many(
    session: AsyncSession,
    writes: Sequence[tuple[Mapping[str, Any] | None, dict[str, Any]]],
    *,
    ends_transaction: bool,
) -> None:
    ids = [after["id"] for _, after in writes]
    collection = _collection(ids[0])
    if len(writes) > 1 and (
        collection in WATCHER_COLLECTIONS
        or len(set(ids)) != len(ids)
        or any(_collection(resource_id) != collection for resource_id in ids)
    ):
        for write in writes:
            await _save_many(session, [write], ends_transaction=False)
        return
    afters = [after for _, after in writes]
    if len(writes) == 1 and writes[0][0] is None and _postgresql(session):
        # One statement instead of three (watchers, upsert, events): for a single write, the
        # cost of each statement (a round trip, SQLAlchemy's work) outweighs the SQL itself.
        await changes.create(session, collection, afters[0], ends_transaction=ends_transaction)
        return
    change = await changes.begin(session, collection, [before for before, _ in writes], ids)
    await put_resources(session, afters)
    await change.announce(session, afters)


async def remove(session: AsyncSession, *, before: Mapping[str, Any]) -> None:
    """Delete the stored resource `before`."""
    resource_id = before["id"]
    change = await changes.begin(session, _collection(resource_id), [before], [resource_id])
    await delete_resource(session, resource_id)
    await change.announce(session, [None])
