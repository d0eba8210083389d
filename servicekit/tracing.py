"""OpenTelemetry tracing: a tracer provider per app, W3C traceparent in and out, a span per request.

The exporter comes from the standard variables: OTEL_TRACES_EXPORTER (`none` by default,
`otlp` for OTLP/HTTP honouring OTEL_EXPORTER_OTLP_*, `console`; a comma list for several) and
OTEL_SERVICE_NAME, which overrides the service's own name. With no exporter no request span is
made (it would be dropped unseen); the caller's `traceparent` is still carried through.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from opentelemetry import context, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Receive, Scope, Send

from servicekit.middleware import ResponseRecorder, route_template

_PROPAGATOR = TraceContextTextMapPropagator()


def exporters_from_env() -> list[SpanExporter]:
    """The span exporters OTEL_TRACES_EXPORTER names; none when it is unset or `none`."""
    value = os.environ.get("OTEL_TRACES_EXPORTER", "none")
    exporters: list[SpanExporter] = []
    for name in (part.strip().lower() for part in value.split(",")):
        if name in ("", "none"):
            continue
        if name == "otlp":
            # Imported only when asked for: it pulls in requests and protobuf.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        else:
            raise ValueError(f"OTEL_TRACES_EXPORTER={value!r}: expected none, otlp or console")
    return exporters


@dataclass(frozen=True)
class Tracing:
    """An app's tracer provider and the tracer its request spans come from."""

    provider: TracerProvider
    tracer: trace.Tracer

    def shutdown(self) -> None:
        """Export what is still buffered and stop the exporters."""
        self.provider.shutdown()


def setup_tracing(
    app: FastAPI, service_name: str, *, exporter: SpanExporter | None = None
) -> Tracing:
    """Give `app` its own tracer provider and a span per request; kept on `app.state.tracing`.

    `exporter` replaces the ones from the environment and exports each span as it ends
    (tests pass an InMemorySpanExporter); exporters from the environment export in batches.
    The global provider is left alone: many apps may live in one process (tests), and
    `serve()` makes the served app's provider the global one.
    """
    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    # Shut down with the app's lifespan, not at exit: tests make many apps in one process.
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: name}), shutdown_on_exit=False
    )
    processors = (
        [SimpleSpanProcessor(exporter)]
        if exporter is not None
        else [BatchSpanProcessor(env_exporter) for env_exporter in exporters_from_env()]
    )
    for processor in processors:
        provider.add_span_processor(processor)
    tracing = Tracing(provider=provider, tracer=provider.get_tracer("servicekit"))
    app.state.tracing = tracing
    if processors:
        app.add_middleware(TracingMiddleware, tracer=tracing.tracer)
    else:
        app.add_middleware(TraceContextMiddleware)
    return tracing


def current_trace_id() -> str | None:
    """The 32-hex-digit id of the trace being recorded in this context, None outside one."""
    context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else None


def inject_trace_headers(headers: dict[str, str]) -> dict[str, str]:
    """Add `traceparent` (and `tracestate`) for the current span to outgoing headers or event
    metadata, so the next service continues this trace; returns the same dict."""
    _PROPAGATOR.inject(headers)
    return headers


def _request_attributes(scope: Scope, headers: dict[str, str]) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "http.request.method": scope["method"],
        "url.path": scope["path"],
        "url.scheme": scope.get("scheme", "http"),
        "network.protocol.version": scope.get("http_version", "1.1"),
    }
    if client := scope.get("client"):
        attributes["client.address"] = client[0]
    if user_agent := headers.get("user-agent"):
        attributes["user_agent.original"] = user_agent
    return attributes


class TracingMiddleware:
    """A SERVER span per HTTP request, continuing the caller's trace when it sent `traceparent`."""

    def __init__(self, app: ASGIApp, tracer: trace.Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        method = scope["method"]
        root_path = scope.get("root_path", "")
        response = ResponseRecorder(send)
        with self.tracer.start_as_current_span(
            method,
            context=_PROPAGATOR.extract(headers),
            kind=SpanKind.SERVER,
            attributes=_request_attributes(scope, headers),
        ) as span:
            try:
                await self.app(scope, receive, response)
            finally:
                # Named after the route template, never the raw path: names are grouped on.
                if (route := route_template(scope, root_path)) is not None:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", response.status)
                if response.status >= 500:
                    span.set_status(StatusCode.ERROR)


class TraceContextMiddleware:
    """Without an exporter: the caller's trace context, when it sent one, becomes the current
    one (no span of ours), so log lines carry its trace id and outgoing calls continue it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # ASGI header names are lowercase.
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in (b"traceparent", b"tracestate")
        }
        if "traceparent" not in carrier:
            await self.app(scope, receive, send)
            return
        token = context.attach(_PROPAGATOR.extract(carrier))
        try:
            await self.app(scope, receive, send)
        finally:
            context.detach(token)
