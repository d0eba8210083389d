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


# Whether a (method, path) is the gateway's own is remembered: FastAPI's route matching costs
# ~0.1 ms a request. Bounded, since paths come from clients: short paths only, few of them.
_REMEMBERED_PATHS = 4096
_REMEMBERED_PATH_LENGTH = 256


class ProxiedPaths:
    """`own_routes` must be complete when the app starts serving (decisions are remembered)."""

    def __init__(self, app: ASGIApp, *, own_routes: Sequence[BaseRoute], forward: Forward) -> None:
        self.app = app
        self.own_routes = own_routes
        self.forward = forward
        self._decided: dict[tuple[str, str], bool] = {}

    def _own(self, scope: Scope) -> bool:
        key = (scope["method"], scope["path"])
        own = self._decided.get(key)
        if own is None:
            own = any(route.matches(scope)[0] is Match.FULL for route in self.own_routes)
            if len(key[1]) <= _REMEMBERED_PATH_LENGTH:
                if len(self._decided) >= _REMEMBERED_PATHS:
                    self._decided.clear()
                self._decided[key] = own
        return own

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
