"""The headers every gateway response carries: security headers, and CORS for browsers.

One layer for both: a request without an Origin (every call but a browser's cross-origin one)
only gets the `Vary: Origin` that Starlette's CORSMiddleware would add, without going through
it; a request with an Origin goes through it as configured.
"""

from __future__ import annotations

from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SECURITY_HEADERS", "EdgeHeadersMiddleware"]

SECURITY_HEADERS = (
    ("strict-transport-security", "max-age=63072000; includeSubDomains"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
)
_RAW_SECURITY_HEADERS = [(name.encode(), value.encode()) for name, value in SECURITY_HEADERS]
_HSTS = b"strict-transport-security"


class EdgeHeadersMiddleware:
    """HSTS, nosniff, no framing, no referrer on every response (upstream values are kept for
    all but HSTS, which only the TLS edge can promise); `cors` are CORSMiddleware's options."""

    def __init__(self, app: ASGIApp, **cors: Any) -> None:
        self.app = app
        self.cors = CORSMiddleware(app, **cors)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cross_origin = any(name == b"origin" for name, _ in scope["headers"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": _with_edge_headers(message, cross_origin)}
            await send(message)

        await (self.cors if cross_origin else self.app)(scope, receive, send_with_headers)


def _with_edge_headers(start: Message, cross_origin: bool) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = []
    present = set()
    vary = []
    for name, value in start.get("headers", ()):
        lower = name.lower()
        if lower == _HSTS:
            continue
        if lower == b"vary" and not cross_origin:
            vary.append(value)
            continue
        present.add(lower)
        headers.append((name, value))
    headers += [h for h in _RAW_SECURITY_HEADERS if h[0] not in present]
    if not cross_origin:  # as CORSMiddleware answers a request without an Origin
        headers.append((b"vary", b", ".join([*vary, b"Origin"])))
    return headers
