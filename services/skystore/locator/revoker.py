"""Revocations of read leases, sent to their holders as core NATS requests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.client import Client

from servicekit.events import BackgroundNats
from services.skystore.leases_wire import Revocation, revocation_subject

__all__ = ["NatsRevoker"]


class NatsRevoker:
    """Connects in the background; `ready` only while connected, so leases are granted only
    while they can be revoked. `on_connected` is given the connection once it is up (the
    locator answers lookups on it too)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 1.0,
        on_connected: Callable[[Client], Awaitable[None]] | None = None,
    ) -> None:
        self._nats = BackgroundNats(url, name="skystore-locator-leases", on_connected=on_connected)
        self._timeout = timeout

    def start(self) -> None:
        self._nats.start()

    @property
    def ready(self) -> bool:
        return self._nats.connected

    async def revoke(self, holder: str, revocation: Revocation) -> bool:
        client = self._nats.client
        if client is None or not client.is_connected:
            return False
        try:
            await client.request(
                revocation_subject(holder), revocation.encode(), timeout=self._timeout
            )
        except (nats.errors.Error, TimeoutError):
            return False  # no responder, no answer in time, or the connection went
        return True

    async def stop(self) -> None:
        await self._nats.stop()
