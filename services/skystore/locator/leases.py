"""Read leases on object records: proxies answer HEAD and GET from a cache of records and still
read every acknowledged write.

A lookup's lease is registered before its record is read, so a write committed afterwards finds
it. Before the write is acknowledged, every holder of a live lease on the key is sent a
revocation and answers once it has dropped its copy; a holder that does not answer is waited out
until its lease ends (it counts its lease from before it asked, so it lets go first). A proxy
that committed a write is granted a lease on the record it wrote, unless a later generation of
the key has been announced already.

Leases live in this process's memory, so one locator process serves a set of proxies. The
horizon, until when granted leases may still be held, is kept in the database: a locator
restarted within it waits it out before acknowledging writes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.skystore.leases_wire import Lease, Revocation
from services.skystore.tables import lease_horizon

__all__ = ["LeaseHorizon", "Leases", "Revoker"]

log = logging.getLogger(__name__)
Key = tuple[str, str]


class Revoker(Protocol):
    @property
    def ready(self) -> bool:
        """Whether revocations can be sent now; no lease is granted otherwise."""
        ...

    async def revoke(self, holder: str, revocation: Revocation) -> bool:
        """True once `holder` has dropped its copy; False if it did not answer."""
        ...


class LeaseHorizon:
    """The persisted bound (wall-clock) on leases this locator has granted."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def load(self) -> float:
        async with self._sessions() as session:
            until = (await session.execute(sa.select(lease_horizon.c.until))).scalar()
        return until.timestamp() if until is not None else 0.0

    async def store(self, until: float) -> None:
        moment = datetime.fromtimestamp(until, UTC)
        async with self._sessions.begin() as session:
            updated = await session.execute(sa.update(lease_horizon).values(until=moment))
            if updated.rowcount == 0:
                await session.execute(sa.insert(lease_horizon).values(id=1, until=moment))


class Leases:
    def __init__(
        self,
        seconds: float,
        revoker: Revoker,
        horizon: LeaseHorizon,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.seconds = seconds
        self._revoker = revoker
        self._horizon = horizon
        self._clock = clock
        self._wall = wall
        self._held: dict[Key, dict[str, float]] = {}  # holder -> when its lease ends
        self._newest: dict[Key, tuple[int, float]] = {}  # generation announced, when
        self._seq = 0
        self._grace_until = 0.0
        self._covered_until = 0.0  # wall clock: the horizon stored
        self._extending: asyncio.Task[None] | None = None
        self._next_sweep = 0.0

    async def start(self) -> None:
        """Read the horizon a previous run left: writes wait until it has passed."""
        self._covered_until = await self._horizon.load()
        self._grace_until = self._clock() + max(0.0, self._covered_until - self._wall())

    async def stop(self) -> None:
        if self._extending is not None:
            await asyncio.gather(self._extending, return_exceptions=True)

    def grant(self, holder: str | None, bucket: str, key: str) -> Lease | None:
        """A lease for `holder` on the record about to be read; None when none can be given."""
        if not holder or self.seconds <= 0 or not self._revoker.ready or not self._covered():
            return None
        self._sweep()
        self._held.setdefault((bucket, key), {})[holder] = self._clock() + self.seconds
        return Lease(self.seconds, self._seq)

    def grant_written(
        self, holder: str | None, bucket: str, key: str, generation: int | None
    ) -> Lease | None:
        """A lease for the proxy that committed `generation`, unless it is superseded."""
        newest = self._newest.get((bucket, key))
        if generation is None or (newest is not None and generation < newest[0]):
            return None
        return self.grant(holder, bucket, key)

    async def revoke(self, bucket: str, key: str, generation: int) -> None:
        """Returns once no holder can still answer from a record older than `generation`."""
        now = self._clock()
        previous = self._newest.get((bucket, key))
        if previous is None or generation > previous[0]:
            self._newest[(bucket, key)] = (generation, now)
        self._seq += 1
        revocation = Revocation(bucket, key, self._seq)
        holders = {h: end for h, end in self._held.pop((bucket, key), {}).items() if end > now}
        wait_until = self._grace_until
        if holders:
            answers = await asyncio.gather(
                *(self._revoker.revoke(holder, revocation) for holder in holders)
            )
            ends = holders.values()
            silent = [end for end, heard in zip(ends, answers, strict=True) if not heard]
            if silent:
                log.warning("%d lease holder(s) of %s/%s silent: waiting", len(silent), bucket, key)
                wait_until = max(wait_until, *silent)
        delay = wait_until - self._clock()
        if delay > 0:
            await asyncio.sleep(delay)

    def _covered(self) -> bool:
        # A lease may only end before the stored horizon. Extending it is a write, so it runs in
        # the background, started while half a lease of cover is still left: a lookup goes
        # without a lease only when that write takes longer (or none was stored yet).
        now = self._wall()
        if now + 1.5 * self.seconds >= self._covered_until and (
            self._extending is None or self._extending.done()
        ):
            self._extending = asyncio.create_task(self._extend())
        return now + self.seconds < self._covered_until

    async def _extend(self) -> None:
        until = self._wall() + self.seconds * 2 + 1.0
        try:
            await self._horizon.store(until)
        except Exception:
            log.exception("could not store the lease horizon; no leases until it is")
            return
        self._covered_until = max(self._covered_until, until)

    def _sweep(self) -> None:
        now = self._clock()
        if now < self._next_sweep:
            return
        self._next_sweep = now + max(self.seconds, 1.0)
        for key in [k for k, held in self._held.items() if max(held.values()) <= now]:
            del self._held[key]
        forget = now - 6 * max(self.seconds, 10.0)
        for key in [k for k, (_, noted) in self._newest.items() if noted < forget]:
            del self._newest[key]
