"""skystore.object.* events, written to the outbox in the transaction of the change they report."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.cloudevents import CloudEvent
from servicekit.outbox import enqueue

__all__ = ["SOURCE", "announce"]

SOURCE = "/skystore/locator"
KINDS = ("created", "replicated", "evicted", "deleted")


async def announce(session: AsyncSession, kind: str, *, bucket: str, key: str, **data: Any) -> None:
    """Queue `skystore.object.<kind>` about bucket/key; the relay publishes it after commit."""
    if kind not in KINDS:
        raise ValueError(f"unknown object event {kind!r}")
    event = CloudEvent(
        type=f"skystore.object.{kind}",
        source=SOURCE,
        subject=f"{bucket}/{key}",
        data={"bucket": bucket, "key": key, **data},
    )
    await enqueue(session, f"skystore.object.{kind}", event)
