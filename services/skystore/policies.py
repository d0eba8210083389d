"""Placement policies, chosen per bucket by name: where writes go, and where reads come from."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar, Protocol

from servicekit.errors import InvalidInput
from services.skystore.schemas import Bucket, Locator

__all__ = ["POLICIES", "PUSH", "Placement", "choose_read", "keeping_policies", "policy"]

Distance = Callable[[str, str], tuple[float, float]]


class Placement(Protocol):
    name: ClassVar[str]
    # A read served from another region leaves a whole copy in the reader's region.
    copy_on_read: ClassVar[bool]
    # The policy itself wants a copy in every region of the bucket (replicate_all, push): its
    # non-base copies are kept. Evicting them would break the policy's promise, and push would
    # only copy them back. Other policies' non-base copies are read caches (copy_on_read, or
    # left over from an earlier policy) and expire when unread past their TTL.
    keeps_replicas: ClassVar[bool]

    def write_regions(self, bucket: Bucket, local: str) -> list[str]:
        """Where a new object's copies are written, the first being its base copy."""
        ...


class WriteLocal:
    """Write where the client is; other regions read it remotely."""

    name: ClassVar[str] = "write_local"
    copy_on_read: ClassVar[bool] = False
    keeps_replicas: ClassVar[bool] = False

    def write_regions(self, bucket: Bucket, local: str) -> list[str]:
        return [local] if bucket.physical_in(local) else [bucket.base_region]


class ReplicateAll:
    """Write every region synchronously: the PUT returns once all copies exist."""

    name: ClassVar[str] = "replicate_all"
    copy_on_read: ClassVar[bool] = False
    keeps_replicas: ClassVar[bool] = True

    def write_regions(self, bucket: Bucket, local: str) -> list[str]:
        regions = [p.region for p in bucket.physical]
        first = local if local in regions else bucket.base_region
        return [first, *(r for r in regions if r != first)]


class Push(WriteLocal):
    """Write locally; the locator's push worker then copies the object to every other region
    of the bucket (on its `skystore.object.created` event; the sweep catches up on missed ones)."""

    name: ClassVar[str] = "push"
    keeps_replicas: ClassVar[bool] = True


class CopyOnRead(WriteLocal):
    """Write locally; a remote read copies the whole object here (a Range read too: the whole
    object or nothing is kept), then serves it from here."""

    name: ClassVar[str] = "copy_on_read"
    copy_on_read: ClassVar[bool] = True
    keeps_replicas: ClassVar[bool] = False


POLICIES: dict[str, Placement] = {
    p.name: p for p in (WriteLocal(), ReplicateAll(), Push(), CopyOnRead())
}
PUSH = Push.name


def keeping_policies() -> list[str]:
    """Policies whose non-base copies are never evicted."""
    return sorted(p.name for p in POLICIES.values() if p.keeps_replicas)


def policy(name: str) -> Placement:
    found = POLICIES.get(name)
    if found is None:
        raise InvalidInput(
            f"unknown placement policy {name!r}; known: {', '.join(sorted(POLICIES))}",
            detail={"policy": name},
        )
    return found


def choose_read(copies: Sequence[Locator], local: str, distance: Distance) -> Locator | None:
    """A ready copy in the local region, else the nearest (latency, then egress cost)."""
    ready = [c for c in copies if c.status == "ready"]
    if not ready:
        return None
    return min(ready, key=lambda c: (distance(c.region, local), c.region))
