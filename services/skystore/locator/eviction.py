"""How long an unread replica is kept: none, a fixed TTL, or the break-even time `t_even`.

t_even = egress cost of fetching the object again ($/GB, base region → replica region) divided
by the cost of keeping it ($/GB-month in the replica's region): past it, storing has cost more
than one more transfer would.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from services.skystore.locator.replicas import TTLFor
from services.skystore.schemas import Link, Region

__all__ = ["ttl_rule"]

MONTH = timedelta(days=30)


def ttl_rule(
    kind: str, *, fixed: timedelta, regions: Sequence[Region], links: Sequence[Link]
) -> TTLFor:
    if kind == "none":
        return lambda replica, base: None
    if kind == "fixed_ttl":
        return lambda replica, base: fixed
    if kind != "t_even":
        raise ValueError(f"unknown eviction {kind!r}: none, fixed_ttl or t_even")
    storage = {r.name: r.storage_cost for r in regions}
    egress = {(link.src, link.dst): link.egress_cost for link in links}

    def t_even(replica: str, base: str) -> timedelta | None:
        keep = storage.get(replica, 0.0)
        fetch = egress.get((base, replica))
        if fetch is None or keep <= 0:
            return None  # free to keep, or no cost known: never evicted
        return MONTH * (fetch / keep)

    return t_even
