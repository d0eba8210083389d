"""Liveness (`/healthz`) and readiness (`/readyz`) of a service."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from fastapi import FastAPI

from servicekit.app import create_service_app
from servicekit.health import Check, ReadinessChecks
from servicekit.logs import JsonFormatter
from servicekit.settings import ServiceSettings
from servicekit.testing import app_client


def service(readiness: dict[str, Check] | None = None) -> FastAPI:
    return create_service_app(
        name="twin", version="1.2.3", settings=ServiceSettings(), readiness=readiness
    )


async def answers() -> None:
    return None


async def refuses() -> None:
    raise ConnectionRefusedError("connection refused")


async def never_answers() -> None:
    await asyncio.Event().wait()


async def test_healthz_says_ok_with_service_and_version() -> None:
    async with app_client(service()) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "twin", "version": "1.2.3"}


async def test_readyz_is_ready_when_every_check_answers() -> None:
    async with app_client(service({"db": answers, "nats": answers})) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"db": "ok", "nats": "ok"}}


async def test_readyz_is_503_naming_the_failing_check_and_its_error() -> None:
    async with app_client(service({"db": answers, "nats": refuses})) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unready",
        "checks": {"db": "ok", "nats": "failed: connection refused"},
    }


async def test_readyz_runs_checks_added_after_the_app_was_made() -> None:
    app = service()
    app.state.readiness.add("s3", refuses)
    async with app_client(app) as client:
        response = await client.get("/readyz")
    assert response.json()["checks"] == {"s3": "failed: connection refused"}


async def test_a_check_added_again_under_its_name_replaces_the_old_one() -> None:
    checks = ReadinessChecks({"db": refuses})
    checks.add("db", answers)
    assert await checks.run() == {"db": "ok"}


async def test_a_check_that_never_answers_fails_at_the_timeout() -> None:
    checks = ReadinessChecks({"nats": never_answers, "db": answers}, timeout=0.05)
    started = time.monotonic()
    outcome = await checks.run()
    assert outcome == {"nats": "failed: no answer within 0.05s", "db": "ok"}
    assert time.monotonic() - started < 1


async def test_a_check_failing_without_a_message_is_named_by_its_exception() -> None:
    async def broken() -> None:
        raise OSError

    assert await ReadinessChecks({"db": broken}).run() == {"db": "failed: OSError"}


async def test_checks_run_concurrently() -> None:
    # Each check answers only once the other has started: run one after the other, both time out.
    started = {"db": asyncio.Event(), "nats": asyncio.Event()}

    def waits_for(other: str, me: str) -> Check:
        async def check() -> None:
            started[me].set()
            await started[other].wait()

        return check

    checks = ReadinessChecks(
        {"db": waits_for("nats", "db"), "nats": waits_for("db", "nats")}, timeout=1
    )
    assert await checks.run() == {"db": "ok", "nats": "ok"}


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_probes_are_logged_at_debug_not_info(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="servicekit.access")
    caplog.handler.setFormatter(JsonFormatter("twin"))
    async with app_client(service()) as client:
        await client.get(path)
    lines = [json.loads(text) for text in caplog.text.splitlines()]
    access = [line for line in lines if line["logger"] == "servicekit.access"]
    assert [(line["path"], line["level"]) for line in access] == [(path, "DEBUG")]
