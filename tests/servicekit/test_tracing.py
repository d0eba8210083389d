"""OpenTelemetry: a SERVER span per request, continuing the caller's W3C trace."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi import APIRouter, FastAPI
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from servicekit.app import create_service_app
from servicekit.infra.ports import free_port
from servicekit.logs import JsonFormatter
from servicekit.settings import ServiceSettings
from servicekit.testing import app_client
from servicekit.tracing import exporters_from_env, inject_trace_headers

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"


def traced_router() -> APIRouter:
    router = APIRouter()

    @router.get("/hazards/{hazard_id}")
    async def get_hazard(hazard_id: str) -> dict[str, str]:
        return {"id": hazard_id}

    @router.get("/outgoing")
    async def outgoing() -> dict[str, str]:
        return inject_trace_headers({})

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    return router


def service(exporter: InMemorySpanExporter | None = None) -> FastAPI:
    return create_service_app(
        name="twin", settings=ServiceSettings(), routers=[traced_router()], span_exporter=exporter
    )


async def test_a_request_with_traceparent_continues_that_trace() -> None:
    exporter = InMemorySpanExporter()
    async with app_client(service(exporter)) as client:
        await client.get("/hazards/h1", headers={"traceparent": TRACEPARENT})
    (span,) = exporter.get_finished_spans()
    assert span.context.trace_id == int(TRACE_ID, 16)
    assert span.parent is not None
    assert span.parent.span_id == int(PARENT_SPAN_ID, 16)
    assert span.parent.is_remote


async def test_the_span_is_a_server_span_named_after_method_and_route_template() -> None:
    exporter = InMemorySpanExporter()
    async with app_client(service(exporter)) as client:
        await client.get("/hazards/h1")
    (span,) = exporter.get_finished_spans()
    assert span.kind == SpanKind.SERVER
    assert span.name == "GET /hazards/{hazard_id}"
    assert span.attributes is not None
    assert span.attributes["http.route"] == "/hazards/{hazard_id}"
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["url.path"] == "/hazards/h1"


async def test_a_request_without_traceparent_starts_a_new_trace() -> None:
    exporter = InMemorySpanExporter()
    async with app_client(service(exporter)) as client:
        await client.get("/hazards/h1")
    (span,) = exporter.get_finished_spans()
    assert span.parent is None


async def test_a_server_error_marks_the_span_as_error() -> None:
    exporter = InMemorySpanExporter()
    async with app_client(service(exporter)) as client:
        await client.get("/boom")
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 500


async def test_the_trace_id_is_on_the_json_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="servicekit.access")
    caplog.handler.setFormatter(JsonFormatter("twin"))
    async with app_client(service(InMemorySpanExporter())) as client:
        await client.get("/hazards/h1", headers={"traceparent": TRACEPARENT})
    lines = [json.loads(text) for text in caplog.text.splitlines()]
    (access,) = [line for line in lines if line["logger"] == "servicekit.access"]
    assert access["trace_id"] == TRACE_ID


async def test_outgoing_headers_carry_the_request_span() -> None:
    exporter = InMemorySpanExporter()
    async with app_client(service(exporter)) as client:
        response = await client.get("/outgoing", headers={"traceparent": TRACEPARENT})
    (span,) = exporter.get_finished_spans()
    assert response.json()["traceparent"] == f"00-{TRACE_ID}-{span.context.span_id:016x}-01"


def test_outgoing_headers_outside_a_trace_stay_as_they_were() -> None:
    assert inject_trace_headers({"a": "b"}) == {"a": "b"}


async def test_otel_service_name_overrides_the_service_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "twin-venice")
    exporter = InMemorySpanExporter()
    async with app_client(service(exporter)) as client:
        await client.get("/hazards/h1")
    (span,) = exporter.get_finished_spans()
    assert span.resource.attributes["service.name"] == "twin-venice"


def test_no_exporter_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    assert exporters_from_env() == []


def test_console_and_otlp_exporters_are_chosen_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console, otlp")
    assert [type(e) for e in exporters_from_env()] == [ConsoleSpanExporter, OTLPSpanExporter]


def test_an_unknown_exporter_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER='zipkin'"):
        exporters_from_env()


@pytest.fixture
def otlp_collector() -> Iterator[tuple[str, list[tuple[str, bytes]], threading.Event]]:
    """A plain HTTP server standing in for an OTLP/HTTP collector: (url, requests, received)."""
    requests: list[tuple[str, bytes]] = []
    received = threading.Event()

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            requests.append((self.path, body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()
            received.set()

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep the test output clean

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", requests, received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_otlp_exporter_sends_spans_to_the_configured_endpoint(
    monkeypatch: pytest.MonkeyPatch,
    otlp_collector: tuple[str, list[tuple[str, bytes]], threading.Event],
) -> None:
    url, requests, received = otlp_collector
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    async with app_client(service()) as client:
        await client.get("/hazards/h1", headers={"traceparent": TRACEPARENT})
    # Leaving the lifespan flushes the batch.
    assert received.wait(timeout=10)
    path, body = requests[0]
    assert path == "/v1/traces"
    assert bytes.fromhex(TRACE_ID) in body


async def test_each_app_exports_only_its_own_spans() -> None:
    first_spans, second_spans = InMemorySpanExporter(), InMemorySpanExporter()
    async with (
        app_client(service(first_spans)) as first,
        app_client(service(second_spans)) as second,
    ):
        await first.get("/hazards/h1")
        await second.get("/hazards/h2")
        await second.get("/hazards/h3")
    assert (len(first_spans.get_finished_spans()), len(second_spans.get_finished_spans())) == (1, 2)


def _no_exporter_service(monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    return service()


async def test_without_an_exporter_no_request_span_is_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with app_client(_no_exporter_service(monkeypatch)) as client:
        response = await client.get("/outgoing")
    assert response.json() == {}


async def test_without_an_exporter_outgoing_calls_continue_the_caller_s_trace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with app_client(_no_exporter_service(monkeypatch)) as client:
        response = await client.get(
            "/outgoing", headers={"traceparent": TRACEPARENT, "tracestate": "vendor=1"}
        )
    assert response.json() == {"traceparent": TRACEPARENT, "tracestate": "vendor=1"}


async def test_without_an_exporter_the_caller_s_trace_id_is_on_the_log_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="servicekit.access")
    caplog.handler.setFormatter(JsonFormatter("twin"))
    async with app_client(_no_exporter_service(monkeypatch)) as client:
        await client.get("/hazards/h1", headers={"traceparent": TRACEPARENT})
        await client.get("/hazards/h2")
    lines = [json.loads(text) for text in caplog.text.splitlines()]
    first, second = [line for line in lines if line["logger"] == "servicekit.access"]
    assert first["trace_id"] == TRACE_ID
    assert "trace_id" not in second
