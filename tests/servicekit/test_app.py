"""The app factory: the service's routers and lifespan inside the platform's chassis."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request

from servicekit.app import create_service_app
from servicekit.settings import ServiceSettings
from servicekit.testing import app_client


def sites_router() -> APIRouter:
    router = APIRouter(prefix="/sites")

    @router.get("/{site}")
    async def get_site(site: str, request: Request) -> dict[str, Any]:
        return {"site": site, "store": getattr(request.state, "store", None)}

    return router


async def test_the_service_routers_are_served() -> None:
    app = create_service_app(name="scheduler", settings=ServiceSettings(), routers=[sites_router()])
    async with app_client(app) as client:
        response = await client.get("/sites/edge")
    assert response.status_code == 200
    assert response.json()["site"] == "edge"


async def test_the_service_lifespan_runs_inside_the_chassis_around_requests() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append("service started")
        yield
        events.append("service stopped")

    app = create_service_app(name="scheduler", settings=ServiceSettings(), lifespan=lifespan)
    async with app_client(app) as client:
        events.append("request")
        await client.get("/healthz")
    assert events == ["service started", "request", "service stopped"]


async def test_the_heap_built_at_start_is_out_of_the_collectors_sight_while_serving() -> None:
    frozen_at_start: list[int] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        frozen_at_start.append(gc.get_freeze_count())
        yield

    gc.unfreeze()
    app = create_service_app(name="scheduler", settings=ServiceSettings(), lifespan=lifespan)
    async with app_client(app) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert gc.get_freeze_count() > 0
    assert frozen_at_start == [0]  # frozen once the service's own start-up is done
    assert gc.get_freeze_count() == 0


async def test_readiness_checks_added_at_start_up_are_run_by_readyz() -> None:
    async def database_answers() -> None:
        return None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.readiness.add("db", database_answers)
        yield

    app = create_service_app(name="scheduler", settings=ServiceSettings(), lifespan=lifespan)
    async with app_client(app) as client:
        response = await client.get("/readyz")
    assert response.json() == {"status": "ready", "checks": {"db": "ok"}}


async def test_state_yielded_by_the_service_lifespan_reaches_requests() -> None:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, str]]:
        yield {"store": "sqlite"}

    app = create_service_app(
        name="scheduler", settings=ServiceSettings(), routers=[sites_router()], lifespan=lifespan
    )
    async with app_client(app) as client:
        response = await client.get("/sites/edge")
    assert response.json()["store"] == "sqlite"


def test_the_settings_are_kept_on_app_state() -> None:
    settings = ServiceSettings(port=8103)
    app = create_service_app(name="scheduler", settings=settings)
    assert app.state.settings is settings


async def test_the_openapi_schema_shows_the_service_not_the_chassis() -> None:
    app = create_service_app(
        name="scheduler", version="2.0.0", settings=ServiceSettings(), routers=[sites_router()]
    )
    async with app_client(app) as client:
        schema = (await client.get("/openapi.json")).json()
    assert schema["info"] == {"title": "scheduler", "version": "2.0.0"}
    assert list(schema["paths"]) == ["/sites/{site}"]
