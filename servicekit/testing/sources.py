"""Where the test session's servers come from, in order of preference.

1. the `EXTRACT_TEST_*` variables, 2. a server already answering on this machine's standard
port, 3. testcontainers when a Docker engine answers, 4. binaries we start ourselves.
Setting `EXTRACT_TEST_ISOLATED=1` skips step 2, which is how the fallbacks are exercised on a
machine that does run the servers.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TypeVar

import asyncpg

from servicekit.infra import (
    NatsServer,
    PostgresCluster,
    S3Endpoint,
    SeaweedRegion,
    find_postgres_bindir,
    free_port,
)
from servicekit.infra.nats import jetstream_answers
from servicekit.infra.seaweed import SeaweedPorts, new_credentials

T = TypeVar("T")

LOCAL_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_NATS = ("127.0.0.1", 4222)
REGIONS = ("local:edge", "local:cloud")


class Unavailable(Exception):
    """No way to get this server here; the message says why (tests skip with it)."""


def run_sync(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(factory()))  # type: ignore[arg-type]
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _isolated() -> bool:
    return os.environ.get("EXTRACT_TEST_ISOLATED", "") not in ("", "0")


def _parallel_worker() -> bool:
    """Whether pytest-xdist runs this process beside others. Their tests would hear each
    other's events on a shared NATS (the streams are named after services), so each worker
    starts its own."""
    return "PYTEST_XDIST_WORKER" in os.environ


def docker_engine_answers() -> bool:
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


async def _pg_answers(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=2)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


def scratch_dir(prefix: str, stack: ExitStack | None = None) -> Path:
    """A directory other local users can traverse (PostgreSQL may run as `postgres`).

    With a stack, the directory is removed when the stack closes, after what it holds stopped.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    if stack is not None:
        stack.callback(shutil.rmtree, path, ignore_errors=True)
    return path


@contextmanager
def postgres_server(stack: ExitStack) -> Iterator[str]:
    """A libpq URL of a PostgreSQL server whose user may create databases."""
    url = os.environ.get("EXTRACT_TEST_PG_URL")
    if url:
        yield url.replace("postgresql+asyncpg://", "postgresql://")
        return
    if not _isolated() and run_sync(lambda: _pg_answers(LOCAL_PG_URL)):
        yield LOCAL_PG_URL
        return
    if docker_engine_answers():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from testcontainers.community.postgres import PostgresContainer

        container = stack.enter_context(PostgresContainer("postgres:16-alpine", driver=None))
        yield container.get_connection_url()
        return
    bindir = find_postgres_bindir()
    if bindir is None:
        raise Unavailable(
            "no PostgreSQL: EXTRACT_TEST_PG_URL is unset, nothing answers on 127.0.0.1:5432, "
            "no Docker engine, and no initdb binary is installed"
        )
    root = scratch_dir("extract-pg-", stack)
    cluster = PostgresCluster(
        bindir=bindir, data_dir=root / "data", port=free_port(), log_path=root / "postgres.log"
    )
    cluster.start()
    stack.callback(cluster.stop)
    yield cluster.url


def start_nats(root: Path) -> NatsServer:
    server = NatsServer(port=free_port(), store_dir=root / "jetstream", log_path=root / "nats.log")
    server.start()
    return server


@contextmanager
def nats_server_url(stack: ExitStack) -> Iterator[str]:
    url = os.environ.get("EXTRACT_TEST_NATS_URL")
    if url:
        yield url
        return
    if not _isolated() and not _parallel_worker() and jetstream_answers(*LOCAL_NATS):
        yield "nats://{}:{}".format(*LOCAL_NATS)
        return
    if docker_engine_answers():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from testcontainers.community.nats import NatsContainer

        container = stack.enter_context(NatsContainer("nats:2-alpine", jetstream=True))
        yield container.nats_uri()
        return
    server = start_nats(scratch_dir("extract-nats-", stack))
    stack.callback(server.stop)
    yield server.url


def endpoints_from_env(text: str) -> dict[str, S3Endpoint]:
    """Parse `region=url,region=url` with keys from EXTRACT_TEST_S3_ACCESS_KEY/_SECRET_KEY."""
    access = os.environ.get("EXTRACT_TEST_S3_ACCESS_KEY", "")
    secret = os.environ.get("EXTRACT_TEST_S3_SECRET_KEY", "")
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    found = {
        region.strip(): S3Endpoint(region.strip(), url.strip(), access, secret)
        for region, url in pairs
    }
    missing = [r for r in REGIONS if r not in found]
    if missing:
        raise Unavailable(f"EXTRACT_TEST_S3_URLS names no endpoint for {', '.join(missing)}")
    return found


@contextmanager
def s3_regions(stack: ExitStack) -> Iterator[dict[str, S3Endpoint]]:
    """Two independent S3 servers, one per local region."""
    text = os.environ.get("EXTRACT_TEST_S3_URLS")
    if text:
        yield endpoints_from_env(text)
        return
    root = scratch_dir("extract-s3-", stack)
    regions = []
    for region in REGIONS:
        access, secret = new_credentials()
        name = region.split(":")[1]
        ports = SeaweedPorts(*(free_port() for _ in range(8)))
        regions.append(
            SeaweedRegion(
                region=region,
                ports=ports,
                data_dir=root / name,
                log_path=root / f"{name}.log",
                access_key=access,
                secret_key=secret,
            )
        )
    for region in regions:
        stack.callback(region.stop)
    # Start both before waiting on either: each takes seconds to come up.
    failures: list[BaseException] = []

    def start(region: SeaweedRegion) -> None:
        try:
            region.start()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=start, args=(r,)) for r in regions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    yield {r.region: r.endpoint for r in regions}
