"""Liveness and readiness: `GET /healthz` (the process answers), `GET /readyz` (its deps do)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from fastapi import APIRouter
from fastapi.responses import JSONResponse

logger = logging.getLogger("servicekit.health")

Check = Callable[[], Awaitable[None]]
"""A readiness check: returns when the dependency answers, raises (anything) when it does not."""


class ReadinessChecks:
    """The named checks `/readyz` runs; services add theirs once they hold their handles."""

    def __init__(self, checks: Mapping[str, Check] | None = None, *, timeout: float = 2.0) -> None:
        self.timeout = timeout
        self._checks: dict[str, Check] = dict(checks or {})

    def add(self, name: str, check: Check) -> None:
        """Register `check` as `name`; a check already under that name is replaced (a service
        started again in the same process brings new handles)."""
        self._checks[name] = check

    async def run(self) -> dict[str, str]:
        """Every check, concurrently, each bounded by the timeout: name → "ok" or "failed: …"."""
        names = list(self._checks)
        outcomes = await asyncio.gather(*(self._run_one(self._checks[name]) for name in names))
        return dict(zip(names, outcomes, strict=True))

    async def _run_one(self, check: Check) -> str:
        deadline = asyncio.timeout(self.timeout)
        try:
            async with deadline:
                await check()
        except Exception as exc:
            if deadline.expired():
                return f"failed: no answer within {self.timeout:g}s"
            return f"failed: {str(exc) or type(exc).__name__}"
        return "ok"


def health_router(*, service: str, version: str, readiness: ReadinessChecks) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service, "version": version}

    @router.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        checks = await readiness.run()
        failed = {name: outcome for name, outcome in checks.items() if outcome != "ok"}
        if failed:
            logger.warning("not ready: %s", "; ".join(f"{n} {o}" for n, o in failed.items()))
            return JSONResponse({"status": "unready", "checks": checks}, status_code=503)
        return JSONResponse({"status": "ready", "checks": checks})

    return router
