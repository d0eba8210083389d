"""The catalog's NATS side: its stream, the outbox relay and the webhook dispatcher.

They start in the background, so the catalog serves requests (and its outbox fills) while
NATS is away; once NATS answers, the relay publishes what accumulated, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

import httpx
from nats.aio.client import Client
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicekit.errors import ServiceUnavailable
from servicekit.events import (
    EventPublisher,
    EventSubscriber,
    connect_nats,
    ensure_stream,
    stream_for,
)
from servicekit.outbox import OutboxRelay
from services.catalog.settings import CatalogSettings
from services.catalog.subscriptions import WebhookDispatcher

__all__ = ["CatalogMessaging"]

log = logging.getLogger(__name__)

SERVICE = "catalog"
WEBHOOK_CONSUMER = "catalog-webhooks"
_RETRY = 1.0  # seconds between attempts to set up the stream


class CatalogMessaging:
    def __init__(
        self, settings: CatalogSettings, sessions: async_sessionmaker[AsyncSession]
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._task: asyncio.Task[None] | None = None
        self._client: Client | None = None
        self._relay: OutboxRelay | None = None
        self._webhooks: EventSubscriber | None = None
        self._http = httpx.AsyncClient(timeout=settings.webhook_timeout, follow_redirects=False)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="catalog-messaging")

    async def _run(self) -> None:
        settings = self._settings
        self._client = await connect_nats(settings.nats_url, name=SERVICE)
        js = self._client.jetstream()
        while True:
            try:
                await ensure_stream(js, SERVICE)
                break
            except ServiceUnavailable as exc:
                log.warning("catalog stream not ready, retrying: %s", exc)
                await asyncio.sleep(_RETRY)
        self._relay = OutboxRelay(self._sessions, EventPublisher(js), poll_interval=0.2)
        await self._relay.start()
        dispatcher = WebhookDispatcher(
            self._sessions,
            self._http,
            allow_private_networks=settings.webhook_allow_private_networks,
        )
        self._webhooks = await EventSubscriber(
            js,
            stream=stream_for(SERVICE).name,
            durable=WEBHOOK_CONSUMER,
            filter_subject="catalog.subscription.>",
            handler=dispatcher.deliver,
            ack_wait=timedelta(seconds=settings.webhook_timeout * 2 + 5),
            max_deliver=settings.webhook_max_attempts,
            retry_delay=timedelta(seconds=settings.webhook_retry_delay),
            retry_delay_cap=timedelta(minutes=5),
        ).start()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._webhooks is not None:
            await self._webhooks.stop()
        if self._relay is not None:
            await self._relay.stop()
        if self._client is not None:
            await self._client.close()
        await self._http.aclose()
