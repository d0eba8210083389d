"""Revocations of read leases, sent to their holders as core NATS requests."""

from __future__ import annotations

import nats.errors

from servicekit.events import BackgroundNats
from services.skystore.leases_wire import Revocation, revocation_subject

__all__ = ["NatsRevoker"]


class NatsRevoker:
    """Connects in the background; `ready` only while connected, so leases are granted only
    while they can be revoked."""

    def __init__(self, url: str, *, timeout: float = 1.0) -> None:
        self._nats = BackgroundNats(url, name="skystore-locator-leases")
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
