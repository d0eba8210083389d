"""Prometheus metrics: `GET /metrics`, request counts and latency by route template, in-flight."""

from __future__ import annotations

import asyncio
import time

import httpx
from fastapi import APIRouter, FastAPI
from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families

from servicekit.app import create_service_app
from servicekit.metrics import DURATION_BUCKETS
from servicekit.settings import ServiceSettings
from servicekit.testing import app_client


def items_router(release: asyncio.Event | None = None) -> APIRouter:
    router = APIRouter(prefix="/items")

    @router.get("/{item_id}")
    async def get_item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    @router.get("/{item_id}/wait")
    async def wait(item_id: str) -> None:
        assert release is not None
        await release.wait()

    @router.get("/{item_id}/boom")
    async def boom(item_id: str) -> None:
        raise RuntimeError("boom")

    return router


def service(release: asyncio.Event | None = None) -> FastAPI:
    return create_service_app(
        name="catalog", settings=ServiceSettings(), routers=[items_router(release)]
    )


async def samples(client: httpx.AsyncClient) -> dict[tuple[str, frozenset], float]:
    """(sample name, labels) → value, as scraped."""
    text = (await client.get("/metrics")).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def labels(**values: str) -> frozenset:
    return frozenset(values.items())


async def test_metrics_are_served_in_the_prometheus_text_format() -> None:
    async with app_client(service()) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert "# TYPE http_requests_total counter" in response.text


async def test_requests_are_counted_by_route_template_not_raw_path() -> None:
    async with app_client(service()) as client:
        await client.get("/items/a")
        await client.get("/items/b")
        scraped = await samples(client)
    key = ("http_requests_total", labels(method="GET", route="/items/{item_id}", status="200"))
    assert scraped[key] == 2
    assert not any(
        dict(sample_labels).get("route") in ("/items/a", "/items/b") for _, sample_labels in scraped
    )


async def test_requests_without_a_route_are_counted_as_unmatched() -> None:
    async with app_client(service()) as client:
        await client.get("/no/such/thing")
        scraped = await samples(client)
    key = ("http_requests_total", labels(method="GET", route="<unmatched>", status="404"))
    assert scraped[key] == 1


async def test_unhandled_errors_are_counted_as_500() -> None:
    async with app_client(service()) as client:
        await client.get("/items/a/boom")
        scraped = await samples(client)
    key = ("http_requests_total", labels(method="GET", route="/items/{item_id}/boom", status="500"))
    assert scraped[key] == 1


async def test_duration_histogram_has_sub_millisecond_buckets() -> None:
    async with app_client(service()) as client:
        await client.get("/items/a")
        scraped = await samples(client)
    bucket_bounds = {
        dict(sample_labels)["le"]
        for name, sample_labels in scraped
        if name == "http_request_duration_seconds_bucket"
    }
    assert bucket_bounds == {str(float(b)) for b in DURATION_BUCKETS} | {"+Inf"}
    key = ("http_request_duration_seconds_count", labels(method="GET", route="/items/{item_id}"))
    assert scraped[key] == 1


async def test_in_flight_counts_requests_being_handled() -> None:
    release = asyncio.Event()
    async with app_client(service(release)) as client:
        waiting = asyncio.create_task(client.get("/items/a/wait"))
        deadline = time.monotonic() + 5
        # The scrape is itself in flight: one waiting request makes two.
        while (in_flight := (await samples(client))[("http_requests_in_flight", labels())]) < 2:
            assert time.monotonic() < deadline, "the waiting request never showed as in flight"
            await asyncio.sleep(0.01)
        release.set()
        await waiting
        after = (await samples(client))[("http_requests_in_flight", labels())]
    assert (in_flight, after) == (2, 1)


async def test_services_register_their_own_metrics_on_the_app_registry() -> None:
    app = service()
    registry = app.state.metrics.registry
    created = Counter("catalog_objects_created", "objects created", registry=registry)
    created.inc(3)
    async with app_client(app) as client:
        scraped = await samples(client)
    assert scraped[("catalog_objects_created_total", labels())] == 3


async def test_each_app_has_its_own_registry() -> None:
    first, second = service(), service()
    async with app_client(first) as client:
        await client.get("/items/a")
    async with app_client(second) as client:
        scraped = await samples(client)
    key = ("http_requests_total", labels(method="GET", route="/items/{item_id}", status="200"))
    assert key not in scraped


async def test_openmetrics_is_served_to_who_asks_for_it() -> None:
    async with app_client(service()) as client:
        response = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
