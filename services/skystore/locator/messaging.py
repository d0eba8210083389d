"""The locator's event relay: outbox rows to the SKYSTORE stream on NATS."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.client import Client
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicekit.errors import ServiceUnavailable
from servicekit.events import EventPublisher, connect_nats, ensure_stream
from servicekit.outbox import OutboxRelay

__all__ = ["EventRelay"]

log = logging.getLogger(__name__)
SERVICE = "skystore"


class EventRelay:
    def __init__(self, nats_url: str, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._url = nats_url
        self._sessions = sessions
        self._task: asyncio.Task[None] | None = None
        self._client: Client | None = None
        self.relay: OutboxRelay | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="skystore-events")

    async def _run(self) -> None:
        self._client = await connect_nats(self._url, name=SERVICE)
        js = self._client.jetstream()
        while True:
            try:
                await ensure_stream(js, SERVICE)
                break
            except ServiceUnavailable as exc:
                log.warning("SKYSTORE stream not ready, retrying: %s", exc)
                await asyncio.sleep(1.0)
        self.relay = OutboxRelay(self._sessions, EventPublisher(js), poll_interval=0.2)
        await self.relay.start()

    def notify(self) -> None:
        if self.relay is not None:
            self.relay.notify()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.relay is not None:
            await self.relay.stop()
        if self._client is not None:
            await self._client.close()
