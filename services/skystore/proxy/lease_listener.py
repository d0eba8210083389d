"""The proxy's end of lease revocation: answers the locator's revocations on core NATS once the
record is dropped, and stops asking for leases while it cannot hear them."""

from __future__ import annotations

import logging

from nats.aio.client import Client
from nats.aio.msg import Msg

from servicekit.events import BackgroundNats
from services.skystore.leases_wire import Revocation, revocation_subject
from services.skystore.proxy.object_cache import ObjectCache

__all__ = ["LeaseListener"]

log = logging.getLogger(__name__)


class LeaseListener:
    def __init__(self, url: str, cache: ObjectCache) -> None:
        self._cache = cache
        self._nats = BackgroundNats(
            url,
            name=f"skystore-proxy-{cache.holder}",
            on_connected=self._listen,
            on_disconnected=self._deaf,
            on_reconnected=self._hearing,
        )

    def start(self) -> None:
        self._nats.start()

    @property
    def client(self) -> Client | None:
        """The connection revocations arrive on, while it is up."""
        return self._nats.client if self._nats.connected else None

    async def _listen(self, client: Client) -> None:
        await client.subscribe(revocation_subject(self._cache.holder), cb=self._revoke)
        await client.flush()
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
        await self._nats.stop()
