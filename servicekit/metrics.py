"""Prometheus metrics of a service: one registry per app, HTTP request metrics, `GET /metrics`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

# Sub-millisecond at the low end: most platform requests answer in well under 1 ms.
DURATION_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
)


class ServiceMetrics:
    """An app's own registry (apps in one process never collide) and its HTTP metrics.

    Services register their own metrics on `registry`:
    `Counter("catalog_objects_created", "…", registry=app.state.metrics.registry)`.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.requests = Counter(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time from request to the end of the response, by method and route template",
            ["method", "route"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "http_requests_in_flight", "HTTP requests being handled now", registry=self.registry
        )


def metrics_router(metrics: ServiceMetrics) -> APIRouter:
    """`GET /metrics`: the registry in the Prometheus text format (OpenMetrics if asked)."""
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def scrape(request: Request) -> Response:
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(metrics.registry), media_type=content_type)

    return router
