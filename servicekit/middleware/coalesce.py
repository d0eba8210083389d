"""Fewer sends per response: a response's head and body leave in one write when they can.

uvicorn writes a response's head and each body message to the transport separately, so even a
small proxied answer costs the client two TLS records and the gateway two `send()`s; on
sandboxed hosts a loopback send costs far more than the bytes (bench/RESULTS.md). This pure
ASGI middleware, the outermost layer, gives uvicorn's response cycle a transport that gathers
the writes made in one turn of the event loop and passes them on as one: when the app returns,
at the next turn, or once 64 KiB are waiting. Streaming is unchanged: a body that arrives over
time leaves as it arrives.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from servicekit.socket_relay import ClientConnection

__all__ = ["CoalescingMiddleware"]

_FLUSH_AT = 64 * 1024


class _GatheringTransport:
    """Writes are held until flush(); everything else goes to the real transport."""

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._size = 0
        self._scheduled = False

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._pending.append(data)
        self._size += len(data)
        if self._size >= _FLUSH_AT:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        self._size = 0
        if not self._transport.is_closing():
            self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._size + self._transport.get_write_buffer_size()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingMiddleware:
    """Engages only under uvicorn, whose `send` is a method of the response cycle holding the
    connection's transport; any other server gets the app unchanged. Being outermost, it also
    publishes the client connection for a body relayed past uvicorn (servicekit.socket_relay)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cycle = getattr(send, "__self__", None)
        transport = getattr(cycle, "transport", None)
        if scope["type"] != "http" or transport is None or not hasattr(transport, "is_closing"):
            await self.app(scope, receive, send)
            return
        if (connection := ClientConnection.of(scope, send)) is not None:
            connection.publish(scope)
        gathering = _GatheringTransport(transport, asyncio.get_running_loop())
        cycle.transport = gathering  # type: ignore[union-attr]
        try:
            await self.app(scope, receive, send)
        finally:
            gathering.flush()
            cycle.transport = transport  # type: ignore[union-attr]
