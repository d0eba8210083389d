"""Counts and times every HTTP request into the app's Prometheus metrics."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Receive, Scope, Send

from servicekit.metrics import ServiceMetrics
from servicekit.middleware import UNMATCHED, ResponseRecorder, route_template

# Any other method string would be a new label value per caller's whim.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})


class MetricsMiddleware:
    """Request count by (method, route, status), duration by (method, route), and in-flight.

    `route` is the route template, `<unmatched>` when no route matched: raw paths would make a
    time series per object id.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        root_path = scope.get("root_path", "")
        response = ResponseRecorder(send)
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, response)
        finally:
            self.metrics.in_flight.dec()
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            route = route_template(scope, root_path) or UNMATCHED
            self.metrics.requests.labels(method, route, str(response.status)).inc()
            self.metrics.duration.labels(method, route).observe(time.perf_counter() - started)
