"""Large bodies moved between the client's socket and an upstream one past uvicorn and asyncio.

A proxy that streams a body through Python pays for every byte several times: a fresh buffer
per read (page faults, a copy into it), the copies between the ASGI layers, then the copies
into and out of the process. Here the client's socket is taken from uvicorn for one body:
- a response body is relayed from the upstream socket with splice(2), through a pipe, without
  entering user space (`RelayedResponse`, `relay`);
- a request body is read off the socket into one reused buffer, on a thread, and handed to the
  caller piece by piece (`ClientConnection.take_request_body`, `pump`).
bench.skystore in bench/RESULTS.md shows the CPU this saves on 64 MiB GETs and PUTs.

That works only under uvicorn's httptools protocol over plain TCP (TLS encrypts in user space)
on Linux; `ClientConnection.in_scope` answers None anywhere else, and the caller streams as
usual. The outermost middleware (`CoalescingMiddleware`) publishes the connection in the scope.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import http.client
import logging
import os
import select
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = [
    "ClientConnection",
    "RelayError",
    "RelayedResponse",
    "SocketBody",
    "in_relay_thread",
    "pump",
    "put_from_socket",
    "relay",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

SCOPE_KEY = "extract.client_connection"
_UVICORN_CYCLE = "uvicorn.protocols.http.httptools_impl"
_PIPE_SIZE = 1024 * 1024
_SPLICE = getattr(os, "splice", None)
# Each relay waits in poll() most of its life; its own pool keeps long transfers from
# starving the default executor that asyncio.to_thread uses.
_RELAYS = ThreadPoolExecutor(max_workers=64, thread_name_prefix="socket-relay")


class RelayError(Exception):
    """The relay stopped before the body was through; the client's connection must close."""


class SocketBody(Protocol):
    """An upstream body of known length, ready to be relayed (one response whose head has been
    read, or several in turn)."""

    length: int  # the whole body

    def send_to(self, target: int, timeout: float) -> None:
        """Move the whole body to the socket `target` (`relay`, on a relay thread); RelayError
        when a side stalls for `timeout` seconds or closes early."""
        ...

    def close(self, *, consumed: bool) -> None:
        """Done with it; `consumed`: the body was read to its last byte."""
        ...


class ClientConnection:
    """The client's side of one request under uvicorn, able to take a body past it."""

    def __init__(self, cycle: Any) -> None:
        self._cycle = cycle

    @classmethod
    def of(cls, scope: Scope, send: Send) -> ClientConnection | None:
        """The connection behind uvicorn's own `send`, when its socket can take a relay."""
        cycle = getattr(send, "__self__", None)
        if _SPLICE is None or scope.get("scheme") != "http":
            return None
        if type(cycle).__module__ != _UVICORN_CYCLE or not hasattr(cycle, "transport"):
            return None
        if cycle.transport.get_extra_info("socket") is None:
            return None
        return cls(cycle)

    def publish(self, scope: Scope) -> None:
        scope.setdefault("extensions", {})[SCOPE_KEY] = self

    @staticmethod
    def in_scope(scope: Scope) -> ClientConnection | None:
        return (scope.get("extensions") or {}).get(SCOPE_KEY)

    async def take(self) -> int:
        """A duplicate of the socket's descriptor, once everything written before is out: a
        connection uvicorn closes meanwhile stays valid until the duplicate is closed."""
        transport = self._cycle.transport
        # Polled: a transport tells when it drops below its low-water mark, never when empty.
        while transport.get_write_buffer_size():  # noqa: ASYNC110
            await asyncio.sleep(0.0005)
        return self._dup()

    def _dup(self) -> int:
        return os.dup(self._cycle.transport.get_extra_info("socket").fileno())

    async def take_request_body(self, receive: Receive) -> tuple[bytes, int | None]:
        """(the body bytes uvicorn has read, a duplicate of the socket's descriptor holding the
        rest, or None when there is no rest). Once the rest is taken, uvicorn reads no more of
        this connection, which closes after the response. The first receive() also answers an
        `Expect: 100-continue`."""
        message = await receive()
        if message["type"] != "http.request":
            raise RelayError("the client went away before sending the body")
        if not message.get("more_body", False):
            return message.get("body", b""), None
        # No await from here on: uvicorn reads nothing more once reading is paused.
        self._cycle.flow.pause_reading()
        self._cycle.keep_alive = False  # its parser still waits for the bytes taken here
        return message.get("body", b""), self._dup()

    def body_sent(self, count: int) -> None:
        """Tell uvicorn that `count` bytes of the declared body went out past it."""
        self._cycle.expected_content_length -= count

    def abort(self) -> None:
        self._cycle.transport.close()


class RelayedResponse(Response):
    """A body of known length relayed from `source` to the client's socket (module doc)."""

    def __init__(
        self,
        source: SocketBody,
        connection: ClientConnection,
        *,
        status_code: int,
        headers: Mapping[str, str],
        media_type: str | None,
        timeout: float,
        background: BackgroundTask | None = None,
    ) -> None:
        self._source = source
        self._connection = connection
        self._timeout = timeout
        self.status_code = status_code
        self.media_type = media_type
        self.background = background
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        consumed = False
        try:
            start = {"status": self.status_code, "headers": self.raw_headers}
            await send({"type": "http.response.start", **start})
            try:
                async with asyncio.timeout(self._timeout):
                    target = await self._connection.take()
            except TimeoutError as exc:
                raise RelayError(f"the client read nothing for {self._timeout} s") from exc
            try:
                await in_relay_thread(self._source.send_to, target, self._timeout)
                consumed = True
            finally:
                os.close(target)
        except RelayError as exc:
            log.warning("response body relay aborted, closing the connection: %s", exc)
            self._connection.abort()
            return
        finally:
            self._source.close(consumed=consumed)
        self._connection.body_sent(self._source.length)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        if self.background is not None:
            await self.background()


def relay(source: int, target: int, count: int, *, prefix: bytes = b"", timeout: float) -> None:
    """Write `prefix`, then move `count` bytes from `source` to `target` through a pipe, waiting
    at most `timeout` seconds for either side at a time. Both may be non-blocking sockets.

    Reading and writing overlap: the pipe takes in what the upstream sends while the client is
    still taking what came before (one read, then one write, would leave each side idle half
    the time)."""
    _write_all(target, prefix, timeout)
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size: keep the default
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        _Pipe(read_end, write_end, source, target, count, timeout).run()
    finally:
        os.close(read_end)
        os.close(write_end)


class _Pipe:
    """One relay: `unread` bytes still on the source, `held` in the pipe."""

    def __init__(
        self, read_end: int, write_end: int, source: int, target: int, count: int, timeout: float
    ) -> None:
        self._read_end, self._write_end = read_end, write_end
        self._source, self._target = source, target
        self._count = count
        self._timeout_ms = timeout * 1000
        self._capacity = fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ)
        self.unread = count
        self.held = 0

    def run(self) -> None:
        while self.unread or self.held:
            poller = select.poll()
            wanted = []
            if self.unread and self.held < self._capacity:
                poller.register(self._source, select.POLLIN)
                wanted.append("the upstream")
            if self.held:
                poller.register(self._target, select.POLLOUT)
                wanted.append("the client")
            ready = {fd for fd, _ in poller.poll(self._timeout_ms)}
            if not ready:
                raise RelayError(f"{' and '.join(wanted)} stalled for {self._timeout_ms / 1000} s")
            if self._source in ready:
                self._take_in()
            if self._target in ready:
                self._give_out()

    def _take_in(self) -> None:
        room = min(self.unread, self._capacity - self.held)
        try:
            moved = _SPLICE(self._source, self._write_end, room, flags=os.SPLICE_F_MOVE)  # type: ignore[misc]
        except BlockingIOError:
            return
        except OSError as exc:
            raise RelayError(f"reading the upstream failed: {exc}") from exc
        if moved == 0:
            raise RelayError(f"the upstream closed with {self.unread} of {self._count} bytes to go")
        self.unread -= moved
        self.held += moved

    def _give_out(self) -> None:
        flags = os.SPLICE_F_MOVE | (os.SPLICE_F_MORE if self.unread else 0)
        try:
            sent = _SPLICE(self._read_end, self._target, self.held, flags=flags)  # type: ignore[misc]
        except BlockingIOError:
            return
        except OSError as exc:
            raise RelayError(f"the client connection failed: {exc}") from exc
        self.held -= sent


def pump(
    source: int,
    count: int,
    sink: Callable[[memoryview], None],
    *,
    timeout: float,
    piece: int = _PIPE_SIZE,
) -> None:
    """Read `count` bytes from `source` (a socket, maybe non-blocking) into one reused buffer,
    handing each read to `sink` before the next; RelayError if it ends early or stalls."""
    buffer = memoryview(bytearray(piece))
    left = count
    while left:
        _wait(source, select.POLLIN, timeout, "the client")
        try:
            got = os.readv(source, [buffer[: min(left, piece)]])
        except BlockingIOError:
            continue
        except OSError as exc:
            raise RelayError(f"reading the client failed: {exc}") from exc
        if got == 0:
            raise RelayError(f"the client closed with {left} of {count} bytes to go")
        sink(buffer[:got])
        left -= got


async def put_from_socket(
    connection: http.client.HTTPConnection,
    path: str,
    headers: Mapping[str, str],
    body: tuple[bytes, int | None, int],
    digest: Callable[[memoryview], None],
    *,
    stall_timeout: float,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """PUT a request body at `path` in one request on `connection` (a fresh one: a stale kept
    one would fail after the body was taken), on a relay thread, then close it: `body` is (the
    bytes already read, the client's socket or None, the body's length); each piece goes to
    `digest` before it is sent. (status, headers, answer).
    RelayError when the client's body ends early or stalls for `stall_timeout` seconds; OSError
    or HTTPException when the upstream fails."""
    first, source, length = body

    def send(piece: memoryview) -> None:
        digest(piece)
        connection.send(piece)

    def put() -> tuple[int, http.client.HTTPMessage, bytes]:
        try:
            if source is None and len(first) != length:
                raise RelayError(f"the body has {len(first)} bytes, {length} were announced")
            connection.putrequest("PUT", path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                connection.putheader(name, value)
            connection.endheaders()
            send(memoryview(first))
            if source is not None:
                pump(source, length - len(first), send, timeout=stall_timeout)
            response = connection.getresponse()
            return response.status, response.headers, response.read()
        finally:
            connection.close()

    return await in_relay_thread(put)


async def in_relay_thread(function: Callable[..., T], *args: Any) -> T:
    """Run a blocking relay step on the relays' own threads."""
    return await asyncio.get_running_loop().run_in_executor(_RELAYS, function, *args)


def _write_all(target: int, data: bytes, timeout: float) -> None:
    view = memoryview(data)
    while view:
        _wait(target, select.POLLOUT, timeout, "the client")
        try:
            view = view[os.write(target, view) :]
        except BlockingIOError:
            continue
        except OSError as exc:
            raise RelayError(f"the client connection failed: {exc}") from exc


def _wait(fd: int, event: int, timeout: float, who: str) -> None:
    poller = select.poll()
    poller.register(fd, event)
    if not poller.poll(timeout * 1000):
        raise RelayError(f"{who} stalled for {timeout} s")
