"""The upstream services: one keep-alive connection pool, breaker and health record each."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field

import httpx

from gateway.breaker import CircuitBreaker
from gateway.settings import GatewaySettings

__all__ = ["Upstream", "Upstreams"]

logger = logging.getLogger("gateway.upstreams")


@dataclass
class Upstream:
    """`transport` carries proxied requests: straight to the connection pool, past the
    client's cookie jar (an upstream's Set-Cookie must never go back with another caller's
    request), auth and redirect layers. `client` (same pool) makes the gateway's own calls."""

    name: str
    url: str
    client: httpx.AsyncClient
    breaker: CircuitBreaker
    transport: httpx.AsyncBaseTransport
    timeout: dict[str, float | None]
    healthy: bool | None = None  # None until the first health check
    last_error: str = field(default="")

    def request(
        self,
        method: str,
        path: str,
        query: bytes,
        headers: list[tuple[str, str]] | list[tuple[bytes, bytes]],
        content: AsyncIterator[bytes] | bytes | None,
    ) -> httpx.Request:
        """A request for `path` (as encoded) and `query` (raw) on this upstream."""
        return httpx.Request(
            method,
            httpx.URL(self.url + path, query=query),
            headers=headers,
            content=content,
            extensions={"timeout": self.timeout},
        )

    async def send(self, request: httpx.Request) -> httpx.Response:
        """Send `request`; the response body is left to stream (aclose() it)."""
        response = await self.transport.handle_async_request(request)
        response.request = request
        return response

    async def check_health(self) -> None:
        """GET /healthz; records the outcome and lets an open breaker try again on success."""
        try:
            response = await self.client.get(f"{self.url}/healthz", timeout=2.0)
        except httpx.HTTPError as exc:
            self.healthy, self.last_error = False, f"{type(exc).__name__}: {exc}"
            return
        self.healthy = response.status_code == 200
        self.last_error = "" if self.healthy else f"/healthz answered {response.status_code}"
        if self.healthy:
            self.breaker.probe_succeeded()


class Upstreams:
    """Every configured upstream by name, and the task that health-checks them."""

    def __init__(self, upstreams: Mapping[str, Upstream]) -> None:
        self._upstreams = dict(upstreams)
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls, settings: GatewaySettings, transport: httpx.AsyncBaseTransport | None = None
    ) -> Upstreams:
        timeout = httpx.Timeout(
            connect=settings.connect_timeout,
            read=settings.read_timeout,
            write=settings.write_timeout,
            pool=settings.connect_timeout,
        )
        limits = httpx.Limits(
            max_connections=settings.pool_size,
            max_keepalive_connections=settings.pool_size,
            keepalive_expiry=30,
        )
        upstreams = {}
        for name, url in settings.upstream_urls().items():
            if not url:
                continue
            pool = transport or httpx.AsyncHTTPTransport(limits=limits)
            client = httpx.AsyncClient(timeout=timeout, transport=pool, follow_redirects=False)
            breaker = CircuitBreaker(
                failures=settings.breaker_failures, reset_after=settings.breaker_reset
            )
            upstreams[name] = Upstream(
                name, url.rstrip("/"), client, breaker, pool, timeout.as_dict()
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
        await asyncio.gather(*(u.client.aclose() for u in self._upstreams.values()))
