"""The app factory every service is built from: health, metrics, errors, tracing, request ids."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from opentelemetry.sdk.trace.export import SpanExporter

from servicekit.health import ReadinessChecks, health_router
from servicekit.metrics import ServiceMetrics, metrics_router
from servicekit.middleware.access_log import AccessLogMiddleware
from servicekit.middleware.coalesce import CoalescingMiddleware
from servicekit.middleware.metrics import MetricsMiddleware
from servicekit.middleware.request_id import RequestIdMiddleware
from servicekit.settings import ServiceSettings
from servicekit.tracing import setup_tracing
from servicekit.wire_errors import WireFormat, install_error_handlers

logger = logging.getLogger("servicekit.app")

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Mapping[str, Any] | None]]

# Probed every few seconds: at info they would drown the requests that matter.
_PROBE_PATHS = ("/healthz", "/readyz", "/metrics")


@contextmanager
def _frozen_heap() -> Iterator[None]:
    """Everything built at start lives as long as the process: out of the collector's sight,
    a full collection no longer walks it (the gateway's ~150k objects took ~150 ms, every few
    thousand requests)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def create_service_app(
    *,
    name: str,
    settings: ServiceSettings,
    version: str = "0.1.0",
    routers: Sequence[APIRouter] = (),
    readiness: Mapping[str, Callable[[], Awaitable[None]]] | None = None,
    wire_format: WireFormat = WireFormat.PROBLEM,
    lifespan: Lifespan | None = None,
    span_exporter: SpanExporter | None = None,
) -> FastAPI:
    """A FastAPI app with the platform's chassis around the service's `routers`.

    `app.state` holds `settings`, `metrics` (its own Prometheus registry), `readiness` (add
    checks at start-up with `app.state.readiness.add(name, check)`), `tracing` and
    `wire_format`. The service's `lifespan` runs inside the chassis's. `span_exporter`
    replaces the exporters named by OTEL_TRACES_EXPORTER (tests pass an in-memory one).
    """

    @asynccontextmanager
    async def chassis_lifespan(app: FastAPI) -> AsyncIterator[Mapping[str, Any] | None]:
        try:
            if lifespan is None:
                with _frozen_heap():
                    logger.info("%s %s started", name, version)
                    yield None
            else:
                async with lifespan(app) as state:
                    with _frozen_heap():
                        logger.info("%s %s started", name, version)
                        yield state
        finally:
            # Flushing spans may wait on the collector: not on the event loop.
            await asyncio.to_thread(app.state.tracing.shutdown)
            logger.info("%s %s stopped", name, version)

    app = FastAPI(
        title=name,
        version=version,
        lifespan=chassis_lifespan,
        # FastAPI >= 0.16x traces and measures requests itself once an OpenTelemetry provider
        # is set (serve() sets one); the middleware here already does, so it would duplicate
        # every span. Older FastAPI keeps unknown keywords in `app.extra`, harmlessly.
        telemetry={"tracing": False, "metrics": False, "logs": False, "auto_configure": False},
    )
    app.state.settings = settings
    app.state.metrics = ServiceMetrics()
    app.state.readiness = ReadinessChecks(readiness)
    app.include_router(health_router(service=name, version=version, readiness=app.state.readiness))
    app.include_router(metrics_router(app.state.metrics))
    for router in routers:
        app.include_router(router)

    # Each middleware added wraps those added before it. From the outside in: request id (so
    # every log line has it), tracing, access log, metrics, then the catch-all that turns
    # unmapped exceptions into 500s that all of the above still see.
    install_error_handlers(app, wire_format)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(AccessLogMiddleware, quiet_paths=_PROBE_PATHS)
    setup_tracing(app, name, exporter=span_exporter)
    app.add_middleware(RequestIdMiddleware)
    # Outermost, outside Starlette's own error middleware too: head and body in one write.
    build_stack = app.build_middleware_stack
    app.build_middleware_stack = lambda: CoalescingMiddleware(build_stack())  # type: ignore[method-assign]
    return app
