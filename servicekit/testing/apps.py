"""Running a service app for a test: in-process over ASGI, or as a real uvicorn subprocess."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from servicekit.infra.ports import free_port
from servicekit.infra.process import ManagedProcess


@asynccontextmanager
async def app_client(
    app: FastAPI, *, headers: Mapping[str, str] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client wired straight to the app, with its lifespan run around it."""
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=30) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app),
            base_url="http://app.test",
            headers=dict(headers or {}),
        ) as client,
    ):
        yield client


def _healthy(url: str, verify: str | bool) -> bool:
    try:
        return httpx.get(url, timeout=1, verify=verify).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class ServiceProcess:
    """`python -m <module>` on a free port, ready once GET /healthz answers 200."""

    module: str
    log_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    scheme: str = "http"
    verify: str | bool = True

    def __post_init__(self) -> None:
        self.process = ManagedProcess(
            name=self.module,
            command=[sys.executable, "-m", self.module, *self.args],
            log_path=self.log_dir / f"{self.module}.log",
            ready=lambda: _healthy(f"{self.url}/healthz", self.verify),
            env=dict(self.env),
        )

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.process.start(timeout=timeout)

    def stop(self) -> None:
        self.process.stop()
