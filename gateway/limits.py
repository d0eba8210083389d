"""Limits at the edge: token-bucket rate limits per IP and per principal, header size caps."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import wire_format_for
from servicekit.errors import TooManyRequests
from servicekit.wire_errors import WireError, WireFormat, render_error

__all__ = ["LimitsMiddleware", "RateLimiter", "TokenBucket"]


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; a request takes one."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float) -> float:
        """0 when a token was taken, else the seconds until one will be there."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimiter:
    """One bucket per key (an IP address, a principal); idle buckets are dropped."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        what: str,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.what = what
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, key: str) -> None:
        """Raise TooManyRequests with Retry-After when `key` has no token left."""
        if self.rate <= 0:
            return
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._drop_full_buckets(now)
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        wait = bucket.take(now)
        if wait > 0:
            raise TooManyRequests(
                f"rate limit of {self.rate:g} requests/s per {self.what} exceeded; "
                f"retry in {wait:.2f}s",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )

    def _drop_full_buckets(self, now: float) -> None:
        # A bucket that has refilled completely holds no state worth keeping.
        self._buckets = {
            key: bucket
            for key, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.stamp) * bucket.rate < bucket.burst
        }


class LimitsMiddleware:
    """Refuses requests with oversized headers (431) or over the per-IP rate (429).

    Errors take `wire_format` when given, else the format of the path (Nuvla under /api/).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        per_ip: RateLimiter,
        max_header_bytes: int,
        wire_format: WireFormat | None = None,
    ) -> None:
        self.app = app
        self.per_ip = per_ip
        self.max_header_bytes = max_header_bytes
        self.wire_format = wire_format

    def _format(self, path: str) -> WireFormat:
        return self.wire_format or wire_format_for(path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        size = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
        if size > self.max_header_bytes:
            error = WireError(
                431,
                "RequestHeaderFieldsTooLarge",
                f"request headers take {size} bytes; at most {self.max_header_bytes} are accepted",
            )
            await render_error(self._format(path), error, resource=path)(scope, receive, send)
            return
        client = scope.get("client")
        try:
            self.per_ip.check(client[0] if client else "unknown")
        except TooManyRequests as exc:
            response = render_error(self._format(path), WireError.of(exc), resource=path)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
