"""HTTP/1.1 to the upstream services: pooled keep-alive connections, responses parsed by httptools.

servicekit's client for HTTP/1.1 upstreams, used by the gateway (proxied requests, the S3
port, health checks) and by the SkyStore proxy (GETs from its regions' S3 stores). A request
without a streamed body is one write on an idle connection; the response comes back through
httptools' callbacks, and a small one is complete when its last packet is parsed. Per proxied
GET this costs a fraction of aiohttp's client (bench/RESULTS.md). Failures come out as this
tree (`upstream_response.py`), and only as it:

    UpstreamFailure                 the request failed; the upstream may have seen part of it
    ├── UpstreamUnreachable         no connection was made: nothing was sent, a retry is safe
    └── UpstreamTimeout             no byte moved for the read or write timeout

An exception raised by the request body's own iterator (a body cap, a client gone) comes out
as itself. Header names given to `request` must be in lower case (as ASGI servers give them).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator, Sequence
from urllib.parse import urlsplit

from servicekit.upstream_connection import Connection
from servicekit.upstream_response import UpstreamResponse, UpstreamUnreachable

__all__ = ["ConnectionPool"]


class ConnectionPool:
    """Keep-alive connections to one upstream (`host`:`port`, over TLS when `tls` is given),
    at most `limit` open at once.

    `read_timeout` bounds the wait for each byte of a response, `write_timeout` each write of a
    streamed request body, `connect_timeout` the wait for a connection (from the pool or new);
    idle connections are dropped after `keepalive` seconds.
    """

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        limit: int,
        keepalive: float,
        connect_timeout: float,
        read_timeout: float,
        write_timeout: float,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.tls = tls
        self.host_header = f"{host}:{port}".encode()
        self.limit = limit
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self._idle: list[Connection] = []
        self._open: set[Connection] = set()
        self._connecting = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    @classmethod
    def for_url(
        cls,
        url: str,
        *,
        limit: int,
        keepalive: float = 30.0,
        connect_timeout: float = 5.0,
        timeout: float,
    ) -> ConnectionPool:
        """A pool to the host of `url` (http, or https checked against the system's CAs),
        named after it; `timeout` bounds each read and each write."""
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        return cls(
            url,
            parts.hostname or "",
            parts.port or (443 if tls else 80),
            tls=ssl.create_default_context() if tls else None,
            limit=limit,
            keepalive=keepalive,
            connect_timeout=connect_timeout,
            read_timeout=timeout,
            write_timeout=timeout,
        )

    async def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: AsyncIterator[bytes] | bytes | None = None,
    ) -> UpstreamResponse:
        """Send a request for `target` (path and query, as encoded); the response's body is
        left to read."""
        connection = self._idle_connection() or await self._new_connection()
        try:
            return await connection.exchange(method, target, headers, body)
        except BaseException:
            connection.abort()
            self.release(connection)
            raise

    async def connect(self) -> Connection:
        """A new connection (tests override this to inject failures)."""
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: Connection(self), self.host, self.port, ssl=self.tls
            )
        except OSError as exc:
            raise UpstreamUnreachable(f"{self.name}: {type(exc).__name__}: {exc}") from None
        return connection

    def release(self, connection: Connection) -> None:
        if connection.closed:
            self._open.discard(connection)
        else:
            connection.idle_since = connection.loop.time()
            self._idle.append(connection)
        self._wake_one()

    def forget(self, connection: Connection) -> None:
        """A connection closed (by either end): its place is free."""
        if connection in self._open:
            self._open.discard(connection)
            if connection in self._idle:
                self._idle.remove(connection)
            self._wake_one()

    def _wake_one(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    async def close(self) -> None:
        for connection in list(self._open):
            connection.abort()
        self._open.clear()
        self._idle.clear()

    def _idle_connection(self) -> Connection | None:
        idle = self._idle
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to be closing
            if not connection.closed and (
                connection.loop.time() - connection.idle_since < self.keepalive
            ):
                return connection
            connection.abort()
            self._open.discard(connection)
        return None

    async def _new_connection(self) -> Connection:
        try:
            async with asyncio.timeout(self.connect_timeout):
                while len(self._open) + self._connecting >= self.limit:
                    waiter = asyncio.get_running_loop().create_future()
                    self._waiting.append(waiter)
                    await waiter
                    if connection := self._idle_connection():
                        return connection
                self._connecting += 1
                try:
                    connection = await self.connect()
                except BaseException:
                    self._connecting -= 1
                    self._wake_one()  # its place is free again
                    raise
                self._connecting -= 1
        except TimeoutError:
            raise UpstreamUnreachable(f"{self.name}: connect timed out") from None
        self._open.add(connection)
        return connection
