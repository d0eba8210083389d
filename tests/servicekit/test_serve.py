"""serve(): a real uvicorn process, JSON logs, exit 0 on SIGTERM, refusals that say why."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from servicekit.infra.ports import free_port
from servicekit.infra.process import wait_until
from servicekit.serve import serve
from servicekit.settings import ServiceSettings

REPO = Path(__file__).resolve().parents[2]

SERVICE = """
import sys
from contextlib import asynccontextmanager

from servicekit.app import create_service_app
from servicekit.serve import serve
from servicekit.settings import ServiceSettings


@asynccontextmanager
async def failing(app):
    raise RuntimeError("database unreachable")
    yield


settings = ServiceSettings(port=int(sys.argv[1]))
lifespan = failing if sys.argv[2] == "fail" else None
serve(lambda: create_service_app(name="probe", settings=settings, lifespan=lifespan), settings)
"""


class Served:
    def __init__(self, tmp_path: Path, mode: str) -> None:
        self.port = free_port()
        self.log_path = tmp_path / "service.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", SERVICE, str(self.port), mode],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_healthy(self) -> None:
        assert wait_until(lambda: self.healthy() or self.process.poll() is not None, timeout=30)
        assert self.process.poll() is None, self.log_path.read_text()

    def log_lines(self) -> list[str]:
        return self.log_path.read_text().splitlines()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Served]:
    served = Served(tmp_path, "ok")
    yield served
    if served.process.poll() is None:
        served.process.kill()
        served.process.wait()


def test_serve_answers_healthz_on_the_configured_port(service: Served) -> None:
    service.wait_healthy()
    assert httpx.get(f"{service.url}/healthz").json()["service"] == "probe"


def test_sigterm_stops_the_server_gracefully_with_exit_code_0(service: Served) -> None:
    service.wait_healthy()
    started = time.monotonic()
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(timeout=10) == 0
    assert time.monotonic() - started < 5


def test_everything_logged_is_json_lines_naming_the_service(service: Served) -> None:
    service.wait_healthy()
    service.process.send_signal(signal.SIGTERM)
    service.process.wait(timeout=10)
    lines = [json.loads(line) for line in service.log_lines()]
    assert {line["service"] for line in lines} == {"probe"}
    assert any(line["logger"].startswith("uvicorn") for line in lines)
    assert any(line["msg"] == "probe 0.1.0 stopped" for line in lines)


def test_a_failed_startup_exits_non_zero_saying_why(tmp_path: Path) -> None:
    served = Served(tmp_path, "fail")
    assert served.process.wait(timeout=30) == 3
    assert "database unreachable" in served.log_path.read_text()


def test_an_unknown_log_level_is_refused_before_serving() -> None:
    settings = ServiceSettings(port=free_port(), log_level="verbose")
    with pytest.raises(ValueError, match="log level 'verbose'"):
        serve(FastAPI(), settings)


def test_a_certificate_without_its_key_is_refused_before_serving() -> None:
    settings = ServiceSettings(port=free_port(), tls_cert="/etc/extract/tls.crt")
    with pytest.raises(ValueError, match="tls_key is empty"):
        serve(FastAPI(), settings)
