"""The proxy's end of lease revocation: answers the locator's revocations on core NATS once the
record is dropped, and stops asking for leases while it cannot hear them."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.client import Client
from nats.aio.msg import Msg

from servicekit.events import connect_nats
from services.skystore.leases_wire import Revocation, revocation_subject
from services.skystore.proxy.object_cache import ObjectCache

__all__ = ["LeaseListener"]

log = logging.getLogger(__name__)


class LeaseListener:
    def __init__(self, url: str, cache: ObjectCache) -> None:
        self._url = url
        self._cache = cache
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="skystore-lease-listener")

    async def _listen(self) -> None:
        self._client = await connect_nats(
            self._url,
            name=f"skystore-proxy-{self._cache.holder}",
            on_disconnected=self._deaf,
            on_reconnected=self._hearing,
        )
        await self._client.subscribe(revocation_subject(self._cache.holder), cb=self._revoke)
        await self._client.flush()
        self._cache.listening = True

    async def _revoke(self, message: Msg) -> None:
        try:
            revocation = Revocation.decode(message.data)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring a malformed lease revocation: %s", exc)
            return
        self._cache.revoke(revocation)
        await message.respond(b"")

    async def _deaf(self) -> None:
        self._cache.listening = False
        self._cache.clear()

    async def _hearing(self) -> None:
        self._cache.listening = True  # the subscription is renewed before this is called

    async def stop(self) -> None:
        self._cache.listening = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.close()
