"""The upstream services: one keep-alive connection pool, breaker and health record each.

Requests go out through `servicekit.upstream_http` (a pooled HTTP/1.1 client on httptools),
whose exception tree (UpstreamFailure, UpstreamUnreachable, UpstreamTimeout; defined in
`servicekit.upstream_response`) is re-exported here.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from gateway.breaker import CircuitBreaker
from gateway.settings import GatewaySettings
from servicekit.upstream_http import ConnectionPool
from servicekit.upstream_response import (
    UpstreamFailure,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamUnreachable,
)

__all__ = [
    "PoolFactory",
    "Upstream",
    "UpstreamFailure",
    "UpstreamResponse",
    "UpstreamTimeout",
    "UpstreamUnreachable",
    "Upstreams",
]

PoolFactory = Callable[..., ConnectionPool]
# Idle connections are dropped before the services' uvicorn (5 s) closes them, so a request
# never goes out on a connection the upstream is closing at that moment.
_KEEPALIVE = 4.0
# The gateway's own checks read at most this much of an answer (OpenAPI documents).
_CHECK_BODY_LIMIT = 16 * 1024 * 1024


@dataclass
class Upstream:
    """`pool` keeps no cookies (an upstream's Set-Cookie never goes back with another
    caller's request) and decodes nothing (content coding is the client's affair)."""

    name: str
    url: str
    pool: ConnectionPool
    breaker: CircuitBreaker
    base_path: str = ""  # the path of `url`, before every request's own
    healthy: bool | None = None  # None until the first health check
    last_error: str = field(default="")

    async def send(
        self,
        method: str,
        path: str,
        query: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: AsyncIterator[bytes] | bytes | None,
    ) -> UpstreamResponse:
        """Send a request for `path` (as encoded) and `query` (raw), header names in lower
        case; the response body is left to stream: read it to its end, or close() it."""
        target = self.base_path + path
        if query:
            target += "?" + query.decode("latin-1")
        return await self.pool.request(method, target, headers, body)

    async def status_of(self, path: str, *, within: float) -> tuple[int, bytes]:
        """The status and body of a GET of `path`, for the gateway's own checks."""
        try:
            async with asyncio.timeout(within):
                response = await self.pool.request("GET", self.base_path + path, ())
                return response.status, await response.read(_CHECK_BODY_LIMIT)
        except TimeoutError:
            raise UpstreamTimeout(f"{self.name}: no answer in {within:g}s") from None

    async def check_health(self) -> None:
        """GET /healthz; records the outcome and lets an open breaker try again on success."""
        try:
            status, _ = await self.status_of("/healthz", within=2.0)
        except UpstreamFailure as exc:
            self.healthy, self.last_error = False, f"{type(exc).__name__}: {exc}"
            return
        self.healthy = status == 200
        self.last_error = "" if self.healthy else f"/healthz answered {status}"
        if self.healthy:
            self.breaker.probe_succeeded()


class Upstreams:
    """Every configured upstream by name, and the task that health-checks them."""

    def __init__(self, upstreams: Mapping[str, Upstream]) -> None:
        self._upstreams = dict(upstreams)
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls, settings: GatewaySettings, pool: PoolFactory = ConnectionPool
    ) -> Upstreams:
        """`pool(name, host, port, tls=, limit=, keepalive=, connect_timeout=, read_timeout=,
        write_timeout=)` makes each upstream's connection pool (tests inject failures)."""
        upstreams = {}
        for name, url in settings.upstream_urls().items():
            if not url:
                continue
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{name} upstream {url!r} must be http(s)://host[:port][/path]")
            tls = parts.scheme == "https"
            connections = pool(
                name,
                parts.hostname,
                parts.port or (443 if tls else 80),
                tls=ssl.create_default_context() if tls else None,
                limit=settings.pool_size,
                keepalive=_KEEPALIVE,
                connect_timeout=settings.connect_timeout,
                read_timeout=settings.read_timeout,
                write_timeout=settings.write_timeout,
            )
            breaker = CircuitBreaker(
                failures=settings.breaker_failures, reset_after=settings.breaker_reset
            )
            upstreams[name] = Upstream(
                name, url.rstrip("/"), connections, breaker, parts.path.rstrip("/")
            )
        return cls(upstreams)

    def get(self, name: str) -> Upstream | None:
        return self._upstreams.get(name)

    def __iter__(self) -> Iterator[Upstream]:
        return iter(self._upstreams.values())

    def start_health_checks(self, interval: float) -> None:
        async def loop() -> None:
            while True:
                await asyncio.gather(*(u.check_health() for u in self._upstreams.values()))
                await asyncio.sleep(interval)

        self._task = asyncio.create_task(loop(), name="gateway-health-checks")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*(u.pool.close() for u in self._upstreams.values()))
