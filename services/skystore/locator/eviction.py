"""How long an unread replica is kept: none, a fixed TTL, or the break-even time `t_even`.

t_even = egress cost of fetching the object again ($/GB, base region → replica region) divided
by the cost of keeping it ($/GB-month in the replica's region): past it, storing has cost more
than one more transfer would.

Which replicas are evictable at all is the placement policy's decision (`keeps_replicas`);
base copies never are. The kind and TTL come from the bucket, else from the locator's settings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta

from services.skystore.schemas import BucketEviction, Link, Region

__all__ = ["BucketTTL", "ReplicaTTL", "bucket_ttl", "ttl_rule"]

MONTH = timedelta(days=30)

# (replica region, base region) -> how long an unread replica is kept; None = for ever.
ReplicaTTL = Callable[[str, str], timedelta | None]
# The same, under a bucket's own eviction settings.
BucketTTL = Callable[[BucketEviction, str, str], timedelta | None]


def ttl_rule(
    kind: str, *, fixed: timedelta, regions: Sequence[Region], links: Sequence[Link]
) -> ReplicaTTL:
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


def bucket_ttl(
    default: str, *, fixed: timedelta, regions: Sequence[Region], links: Sequence[Link]
) -> BucketTTL:
    """The TTL of a replica of a bucket: the bucket's kind and TTL where it sets them, else
    `default` and `fixed`. A bucket that sets only a TTL asks for fixed_ttl."""
    rules: dict[tuple[str, timedelta], ReplicaTTL] = {}

    def ttl(bucket: BucketEviction, replica: str, base: str) -> timedelta | None:
        kind = bucket.eviction or ("fixed_ttl" if bucket.replica_ttl else default)
        seconds = timedelta(seconds=bucket.replica_ttl) if bucket.replica_ttl else fixed
        rule = rules.get((kind, seconds))
        if rule is None:
            rule = rules[(kind, seconds)] = ttl_rule(
                kind, fixed=seconds, regions=regions, links=links
            )
        return rule(replica, base)

    return ttl
