"""The locator's NATS side: outbox rows to the SKYSTORE stream, and its own consumer of them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nats.aio.client import Client
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicekit.errors import ServiceUnavailable
from servicekit.events import (
    EventPublisher,
    EventSubscriber,
    Handler,
    connect_nats,
    ensure_stream,
    stream_for,
)
from servicekit.outbox import OutboxRelay

__all__ = ["EventRelay", "Subscription"]

log = logging.getLogger(__name__)
SERVICE = "skystore"
T = TypeVar("T")


class Subscription:
    """A durable consumer of one subject of the SKYSTORE stream."""

    def __init__(self, durable: str, subject: str, handler: Handler) -> None:
        self.durable = durable
        self.subject = subject
        self.handler = handler


class EventRelay:
    """Connects (waiting for NATS as long as it takes), publishes the outbox and starts the
    subscriptions; all in the background, so the locator serves while NATS is down."""

    def __init__(
        self,
        nats_url: str,
        sessions: async_sessionmaker[AsyncSession],
        subscriptions: tuple[Subscription, ...] = (),
    ) -> None:
        self._url = nats_url
        self._sessions = sessions
        self._subscriptions = subscriptions
        self._task: asyncio.Task[None] | None = None
        self._client: Client | None = None
        self._subscribers: list[EventSubscriber] = []
        self.relay: OutboxRelay | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="skystore-events")

    async def _run(self) -> None:
        self._client = await connect_nats(self._url, name=SERVICE)
        js = self._client.jetstream()
        await _retry("SKYSTORE stream", lambda: ensure_stream(js, SERVICE))
        self.relay = OutboxRelay(self._sessions, EventPublisher(js), poll_interval=0.2)
        await self.relay.start()
        for subscription in self._subscriptions:
            subscriber = await _retry(
                f"consumer {subscription.durable}", lambda s=subscription: _subscribe(js, s)
            )
            self._subscribers.append(subscriber)

    def notify(self) -> None:
        if self.relay is not None:
            self.relay.notify()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for subscriber in self._subscribers:
            await subscriber.stop()
        if self.relay is not None:
            await self.relay.stop()
        if self._client is not None:
            await self._client.close()


async def _subscribe(js: JetStreamContext, subscription: Subscription) -> EventSubscriber:
    subscriber = EventSubscriber(
        js,
        stream=stream_for(SERVICE).name,
        durable=subscription.durable,
        filter_subject=subscription.subject,
        handler=subscription.handler,
    )
    return await subscriber.start()


async def _retry(what: str, attempt: Callable[[], Awaitable[T]]) -> T:
    while True:
        try:
            return await attempt()
        except ServiceUnavailable as exc:
            log.warning("%s not ready, retrying: %s", what, exc)
            await asyncio.sleep(1.0)
