"""Object records held under the locator's read leases (see locator/leases.py), so a HEAD or GET
of a recently read or written key needs no locator round trip. A record read past two thirds of
its lease is due to be asked for again (`due`), in the background: a key read often never
lapses."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from services.skystore.leases_wire import Lease, Revocation
from services.skystore.schemas import ObjectInfo

__all__ = ["ObjectCache"]

Key = tuple[str, str]
RENEW_AT = 2 / 3  # of a lease, when a record still read is asked for again


class ObjectCache:
    def __init__(
        self, holder: str, capacity: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.holder = holder
        self.clock = clock
        self._capacity = capacity
        self._records: dict[Key, tuple[float, float, ObjectInfo]] = {}  # lease end, due, record
        self._revoked: dict[Key, tuple[int, float]] = {}  # newest revocation's seq, kept until
        self._longest = 0.0  # the longest lease granted: how long a lookup can be in flight
        self._next_sweep = 0.0
        # Set while revocations can reach this proxy: leases are asked for only then.
        self.listening = False

    @property
    def asking(self) -> str | None:
        """The holder id to send with a lookup, or None when no lease could be honoured."""
        return self.holder if self.listening and self._capacity > 0 else None

    def get(self, bucket: str, key: str) -> ObjectInfo | None:
        entry = self._records.get((bucket, key))
        if entry is None:
            return None
        if entry[0] <= self.clock():
            del self._records[(bucket, key)]
            return None
        return entry[2]

    def due(self, bucket: str, key: str) -> bool:
        """Whether the record held for bucket/key should be asked for again now; true once per
        lease, past RENEW_AT of it."""
        entry = self._records.get((bucket, key))
        if entry is None or entry[1] > self.clock():
            return False
        self._records[(bucket, key)] = (entry[0], math.inf, entry[2])
        return True

    def keep(self, info: ObjectInfo, lease: Lease | None, asked_at: float) -> None:
        """Hold `info` until its lease, counted from `asked_at` (before the lookup was sent),
        ends — unless a revocation sent after the lease was granted has arrived already."""
        if lease is None or not self.listening or self._capacity <= 0:
            return
        key = (info.bucket, info.key)
        revoked = self._revoked.get(key)
        if revoked is not None and lease.seq < revoked[0]:
            return
        self._longest = max(self._longest, lease.seconds)
        ends = asked_at + lease.seconds
        if ends <= self.clock():
            return
        if key not in self._records and len(self._records) >= self._capacity:
            del self._records[next(iter(self._records))]  # the oldest entry
        self._records[key] = (ends, asked_at + lease.seconds * RENEW_AT, info)

    def revoke(self, revocation: Revocation) -> None:
        key = (revocation.bucket, revocation.key)
        self._records.pop(key, None)
        now = self.clock()
        previous = self._revoked.get(key)
        seq = max(revocation.seq, previous[0]) if previous else revocation.seq
        # Remembered while a lookup answered before this revocation can still arrive.
        self._revoked[key] = (seq, now + self._longest + 1.0)
        self._sweep(now)

    def forget(self, bucket: str, key: str) -> None:
        self._records.pop((bucket, key), None)

    def clear(self) -> None:
        self._records.clear()

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + 1.0
        for key in [k for k, (_, until) in self._revoked.items() if until <= now]:
            del self._revoked[key]
