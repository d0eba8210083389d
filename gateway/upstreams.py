"""The upstream services: one keep-alive connection pool, breaker and health record each.

Requests go out through aiohttp (a pooled HTTP/1.1 client on asyncio): per request it costs a
third of httpx's transport stack (anyio, httpcore, h11). Its exceptions stop here, translated
into the tree below, so the proxies above never see an aiohttp type:

    UpstreamFailure                 the request failed; the upstream may have seen part of it
    ├── UpstreamUnreachable         no connection was made: nothing was sent, a retry is safe
    └── UpstreamTimeout             no byte moved for the read or write timeout

An exception raised by the request body's own iterator (a body cap, a client gone) comes out
as itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from gateway.breaker import CircuitBreaker
from gateway.settings import GatewaySettings

__all__ = [
    "PoolFactory",
    "Upstream",
    "UpstreamFailure",
    "UpstreamTimeout",
    "UpstreamUnreachable",
    "Upstreams",
]

# Headers aiohttp would add on its own; the proxies send what the client sent, no more.
_NO_AUTO_HEADERS = frozenset({"Accept", "Accept-Encoding", "User-Agent", "Content-Type"})
_NOT_FROM_THE_BODY = (OSError, aiohttp.ClientError, asyncio.TimeoutError)

PoolFactory = Callable[..., aiohttp.BaseConnector]
# Idle connections are dropped before the services' uvicorn (5 s) closes them, so a request
# never goes out on a connection the upstream is closing at that moment.
_KEEPALIVE = 4.0


class UpstreamFailure(Exception):
    pass


class UpstreamUnreachable(UpstreamFailure):
    pass


class UpstreamTimeout(UpstreamFailure):
    pass


@dataclass
class Upstream:
    """`session` has no cookie jar: an upstream's Set-Cookie must never go back with another
    caller's request. Responses come back undecoded (content coding is the client's affair)."""

    name: str
    url: str
    session: aiohttp.ClientSession
    breaker: CircuitBreaker
    write_timeout: float
    healthy: bool | None = None  # None until the first health check
    last_error: str = field(default="")

    async def send(
        self,
        method: str,
        path: str,
        query: bytes,
        headers: Sequence[tuple[str, str]],
        body: AsyncIterator[bytes] | bytes | None,
    ) -> aiohttp.ClientResponse:
        """Send a request for `path` (as encoded) and `query` (raw); the response body is left
        to stream: read it to its end, or close() it."""
        target = self.url + path + ("?" + query.decode("latin-1") if query else "")
        try:
            # aiohttp times reads only once the body is sent; a stalled upload is timed here.
            async with asyncio.timeout(None) as deadline:
                clock = _UploadClock(deadline, self.write_timeout)
                try:
                    return await self.session.request(
                        method,
                        URL(target, encoded=True),
                        headers=headers,
                        data=clock.timed(body) if isinstance(body, AsyncIterator) else body,
                        allow_redirects=False,
                    )
                finally:
                    clock.active = False
        except aiohttp.ClientError as exc:
            raise _translated(exc, self.name) from None
        except TimeoutError:
            raise UpstreamTimeout(f"{self.name}: did not take the request body in time") from None

    async def status_of(self, path: str, *, within: float) -> tuple[int, bytes]:
        """The status and body of a GET of `path`, for the gateway's own checks."""
        try:
            async with self.session.get(
                self.url + path, timeout=aiohttp.ClientTimeout(total=within)
            ) as response:
                return response.status, await response.read()
        except aiohttp.ClientError as exc:
            raise _translated(exc, self.name) from None
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


def _translated(exc: aiohttp.ClientError, upstream: str) -> Exception:
    cause = exc.__cause__
    if cause is not None and not isinstance(cause, _NOT_FROM_THE_BODY):
        return cause  # raised by the request body's iterator
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamUnreachable(f"{upstream}: {type(exc).__name__}: {exc}")
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamUnreachable(f"{upstream}: connect timed out")
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return UpstreamTimeout(f"{upstream}: no answer in time")
    return UpstreamFailure(f"{upstream}: {type(exc).__name__}: {exc}")


class _UploadClock:
    """Times each chunk's write to the upstream while the response is awaited: the writer
    resumes the body's iterator only once the chunk before is written."""

    def __init__(self, deadline: asyncio.Timeout, seconds: float) -> None:
        self.deadline = deadline
        self.seconds = seconds
        self.active = True  # off once the response has come (or failed): the deadline is gone

    def _set(self, when: float | None) -> None:
        if self.active:
            self.deadline.reschedule(when)

    async def timed(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        try:
            async for chunk in body:
                self._set(loop.time() + self.seconds)
                yield chunk
                self._set(None)
        finally:
            self._set(None)


class Upstreams:
    """Every configured upstream by name, and the task that health-checks them."""

    def __init__(self, upstreams: Mapping[str, Upstream]) -> None:
        self._upstreams = dict(upstreams)
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls, settings: GatewaySettings, pool: PoolFactory = aiohttp.TCPConnector
    ) -> Upstreams:
        """`pool(limit=, keepalive_timeout=)` makes each upstream's connection pool (tests
        inject connect failures with a TCPConnector of their own)."""
        timeout = aiohttp.ClientTimeout(
            connect=settings.connect_timeout,  # waiting for a pooled connection included
            sock_connect=settings.connect_timeout,
            sock_read=settings.read_timeout,
        )
        upstreams = {}
        for name, url in settings.upstream_urls().items():
            if not url:
                continue
            session = aiohttp.ClientSession(
                connector=pool(limit=settings.pool_size, keepalive_timeout=_KEEPALIVE),
                timeout=timeout,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=_NO_AUTO_HEADERS,
                auto_decompress=False,
            )
            breaker = CircuitBreaker(
                failures=settings.breaker_failures, reset_after=settings.breaker_reset
            )
            upstreams[name] = Upstream(
                name, url.rstrip("/"), session, breaker, settings.write_timeout
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
        await asyncio.gather(*(u.session.close() for u in self._upstreams.values()))
