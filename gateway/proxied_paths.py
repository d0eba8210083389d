"""Proxied requests answered in one pure ASGI layer, before FastAPI's router and dependencies.

Every request that no route of the gateway's own API claims (sessions, credentials, device
keys, JWKS, OpenAPI, probes, static files) goes to `forward` here: FastAPI's exception
middleware, router and dependency machinery cost more than the rest of proxying a small
request. The chassis middleware outside this layer (request id, tracing, access log, metrics,
security headers, CORS, limits) still sees every request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import wire_format_for
from servicekit.errors import ExtractError
from servicekit.wire_errors import WireError, render_error

__all__ = ["ProxiedPaths"]

Forward = Callable[[Request], Awaitable[Response]]


class ProxiedPaths:
    """`own_routes` are read at each request, so routes added after the app was built count."""

    def __init__(self, app: ASGIApp, *, own_routes: Sequence[BaseRoute], forward: Forward) -> None:
        self.app = app
        self.own_routes = own_routes
        self.forward = forward

    def _own(self, scope: Scope) -> bool:
        return any(route.matches(scope)[0] is Match.FULL for route in self.own_routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._own(scope):
            await self.app(scope, receive, send)
            return
        try:
            response = await self.forward(Request(scope, receive))
        except ExtractError as exc:
            path = scope["path"]
            response = render_error(wire_format_for(path), WireError.of(exc), resource=path)
        await response(scope, receive, send)
