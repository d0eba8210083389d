"""Request ids and the access log, in-process and behind a real uvicorn server."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import APIRouter, FastAPI, Request

from servicekit.app import create_service_app
from servicekit.infra.ports import free_port
from servicekit.logs import JsonFormatter
from servicekit.middleware.request_id import current_request_id
from servicekit.settings import ServiceSettings
from servicekit.testing import app_client


def sites_router() -> APIRouter:
    agents = APIRouter(prefix="/agents")

    @agents.get("/{agent}")
    async def get_agent(agent: str, request: Request) -> dict[str, Any]:
        return {"state": request.state.request_id, "context": current_request_id()}

    sites = APIRouter(prefix="/v1/sites/{site}")
    sites.include_router(agents)
    return sites


def service() -> FastAPI:
    app = create_service_app(name="scheduler", settings=ServiceSettings(), routers=[sites_router()])
    legacy = FastAPI()

    @legacy.get("/things/{thing}")
    async def get_thing(thing: str) -> dict[str, str]:
        return {"thing": thing}

    app.mount("/legacy", legacy)
    return app


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    lines = [json.loads(text) for text in caplog.text.splitlines()]
    return [line for line in lines if line["logger"] == "servicekit.access"]


@pytest.fixture
def access_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="servicekit.access")
    return caplog


@pytest.mark.parametrize("incoming", ["req-1", "a.B_c-9", "x" * 128])
async def test_a_sane_request_id_is_echoed(incoming: str) -> None:
    async with app_client(service()) as client:
        response = await client.get("/v1/sites/edge/agents/a1", headers={"X-Request-ID": incoming})
    assert response.headers["x-request-id"] == incoming


@pytest.mark.parametrize("incoming", ["x" * 129, "two words", "id;drop", "ünïcode", ""])
async def test_an_unsafe_request_id_is_replaced_by_a_fresh_one(incoming: str) -> None:
    async with app_client(service()) as client:
        response = await client.get(
            "/v1/sites/edge/agents/a1", headers={"X-Request-ID": incoming.encode()}
        )
    assert response.headers["x-request-id"] != incoming
    assert uuid.UUID(hex=response.headers["x-request-id"]).version == 4


async def test_a_request_without_an_id_gets_a_uuid4_hex() -> None:
    async with app_client(service()) as client:
        response = await client.get("/v1/sites/edge/agents/a1")
    request_id = response.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert uuid.UUID(hex=request_id).version == 4


async def test_every_request_gets_its_own_id() -> None:
    async with app_client(service()) as client:
        responses = [await client.get("/healthz") for _ in range(3)]
    assert len({response.headers["x-request-id"] for response in responses}) == 3


async def test_handlers_see_the_request_id_in_state_and_context() -> None:
    async with app_client(service()) as client:
        response = await client.get("/v1/sites/edge/agents/a1", headers={"X-Request-ID": "r-5"})
    assert response.json() == {"state": "r-5", "context": "r-5"}


async def test_the_access_log_line_says_who_asked_what_and_how_it_went(
    access_log: pytest.LogCaptureFixture,
) -> None:
    access_log.handler.setFormatter(JsonFormatter("scheduler"))
    async with app_client(service()) as client:
        response = await client.get("/v1/sites/edge/agents/a1", headers={"X-Request-ID": "r-7"})
    (line,) = access_lines(access_log)
    assert line["level"] == "INFO"
    assert line["service"] == "scheduler"
    assert line["request_id"] == "r-7"
    assert (line["method"], line["status"]) == ("GET", 200)
    assert line["path"] == "/v1/sites/edge/agents/a1"
    assert line["route"] == "/v1/sites/{site}/agents/{agent}"
    assert line["bytes"] == len(response.content)
    assert line["duration_ms"] > 0
    assert line["client"] == "127.0.0.1:123"  # what httpx's ASGI transport claims to be


async def test_the_access_log_leaves_the_query_string_out(
    access_log: pytest.LogCaptureFixture,
) -> None:
    access_log.handler.setFormatter(JsonFormatter("scheduler"))
    async with app_client(service()) as client:
        await client.get("/v1/sites/edge/agents/a1", params={"X-Amz-Signature": "secret"})
    assert "secret" not in access_log.text


async def test_routes_of_a_mounted_app_carry_the_mount_prefix(
    access_log: pytest.LogCaptureFixture,
) -> None:
    access_log.handler.setFormatter(JsonFormatter("scheduler"))
    async with app_client(service()) as client:
        await client.get("/legacy/things/t1")
    (line,) = access_lines(access_log)
    assert line["route"] == "/legacy/things/{thing}"


async def test_requests_no_route_matched_are_logged_as_unmatched(
    access_log: pytest.LogCaptureFixture,
) -> None:
    access_log.handler.setFormatter(JsonFormatter("scheduler"))
    async with app_client(service()) as client:
        await client.get("/nowhere")
    (line,) = access_lines(access_log)
    assert (line["route"], line["status"]) == ("<unmatched>", 404)


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """The app behind a real uvicorn server on a free port of 127.0.0.1; yields its URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                assert not task.done(), "uvicorn stopped before it started"
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_behind_uvicorn_the_log_names_the_real_client_and_the_id_is_echoed(
    access_log: pytest.LogCaptureFixture,
) -> None:
    access_log.handler.setFormatter(JsonFormatter("scheduler"))
    async with served(service()) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/v1/sites/edge/agents/a1", headers={"X-Request-ID": "r-9"})
    assert response.headers["x-request-id"] == "r-9"
    (line,) = access_lines(access_log)
    host, port = line["client"].rsplit(":", 1)
    assert host == "127.0.0.1"
    assert int(port) > 0
    assert line["request_id"] == "r-9"
