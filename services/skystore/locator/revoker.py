"""Revocations of read leases, sent to their holders as core NATS requests."""

from __future__ import annotations

import asyncio
import contextlib

import nats.errors
from nats.aio.client import Client

from servicekit.events import connect_nats
from services.skystore.leases_wire import Revocation, revocation_subject

__all__ = ["NatsRevoker"]


class NatsRevoker:
    """Connects in the background; `ready` only while connected, so leases are granted only
    while they can be revoked."""

    def __init__(self, url: str, *, timeout: float = 1.0) -> None:
        self._url = url
        self._timeout = timeout
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect(), name="skystore-lease-revoker")

    async def _connect(self) -> None:
        self._client = await connect_nats(self._url, name="skystore-locator-leases")

    @property
    def ready(self) -> bool:
        return self._client is not None and self._client.is_connected

    async def revoke(self, holder: str, revocation: Revocation) -> bool:
        if not self.ready:
            return False
        assert self._client is not None
        try:
            await self._client.request(
                revocation_subject(holder), revocation.encode(), timeout=self._timeout
            )
        except (nats.errors.Error, TimeoutError):
            return False  # no responder, no answer in time, or the connection went
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.close()
