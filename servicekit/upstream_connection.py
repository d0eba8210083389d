"""One keep-alive HTTP/1.1 connection to an upstream: requests out, answers via httptools."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import httptools

from servicekit.upstream_response import UpstreamFailure, UpstreamResponse, UpstreamTimeout

if TYPE_CHECKING:
    from servicekit.upstream_http import ConnectionPool

__all__ = ["Connection"]

# Reading from an upstream pauses while this much of its response waits for the client.
_PAUSE_READING_AT = 256 * 1024
_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


class Connection(asyncio.Protocol):
    """One keep-alive connection, carrying one request at a time."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.response: UpstreamResponse | None = None
        self._head: asyncio.Future[UpstreamResponse] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._interim = False
        self._keep_alive = False
        self._method = "GET"
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None

    # -- the request

    async def exchange(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: AsyncIterator[bytes] | bytes | None,
    ) -> UpstreamResponse:
        assert self.transport is not None
        self._method = method
        self._headers = []
        self._interim = False
        self._error = None
        self._head = self.loop.create_future()
        if body is None or isinstance(body, bytes):
            head, _ = _head(method, target, headers, self.pool.host_header, body)
            self.transport.write(head + body if body else head)
            self._last_read = self.loop.time()
            self._arm_timer()
        else:  # streamed: the response is timed once the body is out, as the writer goes on
            head, chunked = _head(method, target, headers, self.pool.host_header, body)
            self.transport.write(head)
            self._writer = self.loop.create_task(self._write_body(body, chunked))
        return await self._head

    async def _write_body(self, body: AsyncIterator[bytes], chunked: bool) -> None:
        transport = self.transport
        assert transport is not None
        try:
            async for chunk in body:
                if self.closed:
                    return
                if chunk:
                    transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                if self._writing_paused:
                    await self._drain()
            if self.closed:
                return
            if chunked:
                transport.write(b"0\r\n\r\n")
            if self._timer is None and not (self.response and self.response.complete):
                self._last_read = self.loop.time()
                self._arm_timer()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the body's own exception, or a stall, ends the exchange
            if isinstance(exc, TimeoutError):
                exc = UpstreamTimeout(f"{self.pool.name}: did not take the request body in time")
            self._fail(exc)
            self.abort()

    async def _drain(self) -> None:
        self._drained = self.loop.create_future()
        try:
            async with asyncio.timeout(self.pool.write_timeout):
                await self._drained
        finally:
            self._drained = None

    # -- the response, as the application reads it

    async def more(self) -> None:
        """Wait until more of the body (or its end) has arrived; raise why it never will."""
        if self._error is not None:
            raise self._error
        if self._reading_paused:
            self._resume_reading()
        self._waiter = self.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def taken(self) -> None:
        if self._reading_paused:
            self._resume_reading()

    def finished(self, *, reusable: bool) -> None:
        """The response is done with: keep the connection for the next request, or close it."""
        self.response = None
        self._cancel_timer()
        writer, self._writer = self._writer, None
        if writer is not None and not writer.done():
            writer.cancel()
            reusable = False
        if reusable and not self.closed and self._keep_alive:
            if self._method == "HEAD":  # httptools cannot be told to expect no body
                self.parser = httptools.HttpResponseParser(self)
            self.pool.release(self)
        else:
            self.abort()
            self.pool.release(self)

    def abort(self) -> None:
        self.closed = True
        self._cancel_timer()
        if self._writer is not None and self._writer is not asyncio.current_task():
            self._writer.cancel()
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio's callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._last_read = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamFailure(f"{self.pool.name}: invalid HTTP response: {exc}"))
            self.abort()

    def eof_received(self) -> bool:
        self.closed = True  # not to be taken from the pool before connection_lost says so
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        self.pool.forget(self)
        response = self.response
        if response is not None and not response.complete and self._reads_until_close(response):
            response.complete = True
            self._wake()
        elif self._head is not None or (response is not None and not response.complete):
            reason = f": {exc}" if exc else ""
            self._fail(UpstreamFailure(f"{self.pool.name}: the connection closed early{reason}"))
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- httptools' callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # interim (100 Continue): the real answer follows
            self._interim = True
            self._headers = []
            return
        self._keep_alive = self.parser.should_keep_alive()
        response = self.response = UpstreamResponse(self, status, self._headers)
        if self._method == "HEAD":
            self._message_complete(response)
        head, self._head = self._head, None
        if head is not None and not head.done():
            head.set_result(response)

    def on_body(self, body: bytes) -> None:
        response = self.response
        if response is None or response.complete:
            return
        response._received(body)
        if response._size > _PAUSE_READING_AT and not self._reading_paused:
            self._reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
        elif self.response is not None:
            self._message_complete(self.response)

    # -- helpers

    def _message_complete(self, response: UpstreamResponse) -> None:
        response.complete = True
        self._cancel_timer()
        self._wake()

    def _reads_until_close(self, response: UpstreamResponse) -> bool:
        # Neither a length nor chunks: the body ends when the upstream closes (RFC 9112 §6.3).
        names = {name.lower() for name, _ in response.raw_headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self._cancel_timer()
        head, self._head = self._head, None
        if head is not None and not head.done():
            head.set_exception(error)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def _resume_reading(self) -> None:
        self._reading_paused = False
        self._last_read = self.loop.time()
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def _arm_timer(self) -> None:
        self._timer = self.loop.call_at(self._last_read + self.pool.read_timeout, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        # Rescheduled lazily: a packet only notes its time, the timer looks when it is due.
        self._timer = None
        if self._reading_paused:  # the client is slow, not the upstream
            self._last_read = self.loop.time()
        elif self.loop.time() - self._last_read >= self.pool.read_timeout:
            self._fail(UpstreamTimeout(f"{self.pool.name}: no answer in time"))
            self.abort()
            return
        self._arm_timer()


def _head(
    method: str,
    target: str,
    headers: Sequence[tuple[bytes, bytes]],
    host: bytes,
    body: AsyncIterator[bytes] | bytes | None,
) -> tuple[bytes, bool]:
    """The request's head, and whether its body goes in chunks."""
    parts = [f"{method} {target} HTTP/1.1\r\n".encode("latin-1")]
    has_host = has_length = False
    for name, value in headers:
        if name == b"host":
            has_host = True
        elif name == b"content-length":
            has_length = True
        parts += (name, b": ", value, b"\r\n")
    if not has_host:
        parts.append(b"host: %b\r\n" % host)
    chunked = False
    if not has_length:
        if isinstance(body, bytes) and body:
            parts.append(b"content-length: %d\r\n" % len(body))
        elif body is not None and not isinstance(body, bytes):
            chunked = True
            parts.append(b"transfer-encoding: chunked\r\n")
        elif method in _METHODS_WITH_BODY:
            parts.append(b"content-length: 0\r\n")
    parts.append(b"\r\n")
    head = b"".join(parts)
    # A CR or LF inside a name, value or target would start a header of its own.
    lines = len(parts) - 3 * len(headers)  # a header is four parts, other lines one each
    if head.count(b"\n") != lines or head.count(b"\r") != lines:
        raise ValueError(f"request head for {target!r}: CR or LF inside a header or the target")
    return head, chunked
