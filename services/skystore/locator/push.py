"""Push replication driven by the locator's own `skystore.object.created` events.

The event handler only plans: in one transaction it records the event in the inbox and starts
(phase one) every replica the version still lacks, so a redelivered event finds nothing to do.
Workers then copy the bytes and complete the replicas. A replica lost to a crash stays pending
until the reaper rolls it back; a failed copy is aborted; either way the sweep's
`missing_replicas` copies it later, as it does for events missed while NATS was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicekit.cloudevents import CloudEvent
from servicekit.db import Clock, utc_now
from servicekit.inbox import consume_once
from services.skystore.locator import replicas
from services.skystore.locator.replication import Replicator
from services.skystore.policies import PUSH
from services.skystore.schemas import Locator

__all__ = ["CREATED", "PushWorker"]

log = logging.getLogger(__name__)

CREATED = "skystore.object.created"


class PushWorker:
    """`on_created` is the EventSubscriber handler; `workers` copies run concurrently."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        replicator: Replicator,
        *,
        consumer: str,
        workers: int = 2,
        clock: Clock = utc_now,
    ) -> None:
        self._sessions = sessions
        self._replicator = replicator
        self._consumer = consumer
        self._clock = clock
        self._queue: asyncio.Queue[tuple[Locator, Locator]] = asyncio.Queue()
        self._workers = workers
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._work(), name=f"skystore-push-{n}")
            for n in range(self._workers)
        ]

    async def stop(self) -> None:
        # Copies cut short stay pending: the reaper rolls them back, the sweep redoes them.
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def on_created(self, event: CloudEvent) -> None:
        data = event.data if isinstance(event.data, dict) else {}
        try:
            bucket, key, generation = data["bucket"], data["key"], int(data["generation"])
        except (KeyError, TypeError, ValueError):
            log.error("event %s: %s without bucket, key and generation; ignored", event.id, CREATED)
            return
        if data.get("policy", PUSH) != PUSH:
            return  # another bucket's write: no transaction spent on it (older events: looked up)
        async with self._sessions.begin() as session:
            if not await consume_once(session, self._consumer, event.id, clock=self._clock):
                return
            planned = await replicas.start_push(
                session,
                bucket=bucket,
                key=key,
                generation=generation,
                policy=PUSH,
                now=self._clock(),
            )
        for source, target in planned:
            log.info(
                "push %s/%s generation %d to %s (event %s)",
                bucket,
                key,
                generation,
                target.region,
                event.id,
            )
            self._queue.put_nowait((source, target))

    async def _work(self) -> None:
        while True:
            source, target = await self._queue.get()
            try:
                await self._replicator.finish(source, target)
            except Exception:
                log.exception("push of replica %d failed; the sweep retries it", target.id)
            finally:
                self._queue.task_done()
