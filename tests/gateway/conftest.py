"""Gateway fixtures: a local CA, a tiny real upstream, and gateways served over real TLS."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from gw_servers import ThreadedServer, serving
from gw_skystore import skystore  # noqa: F401  (a fixture)
from gw_upstream import Probe, upstream_app

from gateway.app import create_app
from gateway.routes import DEFAULT_ROUTES, Route
from gateway.settings import GatewaySettings
from gateway.upstreams import PoolFactory
from servicekit.infra.ports import free_port
from servicekit.security import LocalCA, SigningKey, client_context, server_context
from servicekit.testing import ServiceProcess
from servicekit.upstream_http import ConnectionPool

MiB = 1024 * 1024
TEST_ROUTES = (
    *DEFAULT_ROUTES,
    Route("/test/", "staging", strip_prefix=True, max_body=256 * MiB),
    Route("/small/", "staging", strip_prefix=True, max_body=1024),
)


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server cert, server key) from a fresh local CA, for 127.0.0.1 and localhost."""
    ca = LocalCA.load_or_create(tmp_path / "tls")
    cert, key = ca.issue_server_certificate(["127.0.0.1", "localhost"], tmp_path / "tls", "gw")
    return ca.cert_path, cert, key


@pytest.fixture
def identity_key_file(tmp_path: Path, identity_key: SigningKey) -> Path:
    path = tmp_path / "identity.key.pem"
    path.write_bytes(identity_key.to_pem())
    return path


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def upstream(probe: Probe) -> Iterator[ThreadedServer]:
    with serving(upstream_app(probe)) as server:
        yield server


GatewayFactory = Callable[..., ThreadedServer]


@pytest.fixture
def make_gateway(
    tmp_path: Path,
    tls_files: tuple[Path, Path, Path],
    identity_key_file: Path,
    upstream: ThreadedServer,
) -> Iterator[GatewayFactory]:
    """make_gateway(pool=ConnectionPool, routes=TEST_ROUTES, **settings) -> a running TLS gateway
    whose `staging` upstream is the test upstream (paths /test/… and /small/…)."""
    _, cert, key = tls_files
    stack = ExitStack()
    count = 0

    def make(
        pool: PoolFactory = ConnectionPool,
        routes: tuple[Route, ...] = TEST_ROUTES,
        **overrides: Any,
    ) -> ThreadedServer:
        nonlocal count
        count += 1
        values: dict[str, Any] = {
            "database_url": f"sqlite+aiosqlite:///{tmp_path / f'gateway{count}.sqlite'}",
            "identity_key": str(identity_key_file),
            "signing_key": str(tmp_path / "gateway-sign.key.pem"),
            "tls_cert": str(cert),
            "tls_key": str(key),
            "catalog_url": "",
            "skystore_url": "",
            "serving_url": "",
            "semantic_url": "",
            "scheduler_url": "",
            "staging_url": upstream.url,
            "health_interval": 0.2,
            "nats_url": "",
            **overrides,
        }
        settings = GatewaySettings(**values)
        app = create_app(settings, routes=routes, pool=pool)
        context = server_context(cert, key)
        return stack.enter_context(serving(app, ssl_context=context))

    with stack:
        yield make


@pytest.fixture
def tls_client_context(tls_files: tuple[Path, Path, Path]) -> ssl.SSLContext:
    return client_context(tls_files[0])


@pytest.fixture
async def client_of(
    tls_client_context: ssl.SSLContext,
) -> AsyncIterator[Callable[[ThreadedServer], httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []

    def make(server: ThreadedServer) -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=server.url, verify=tls_client_context, timeout=30)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def catalog(
    tmp_path: Path, sqlite_database_url: str, identity_jwks_path: Path
) -> Iterator[ServiceProcess]:
    """The real catalog, trusting identity tokens signed with the session's identity key."""
    port = free_port()
    env = {
        "EXTRACT_CATALOG_PORT": str(port),
        "EXTRACT_CATALOG_DATABASE_URL": sqlite_database_url,
        "EXTRACT_CATALOG_IDENTITY_JWKS": str(identity_jwks_path),
        "EXTRACT_HOME": str(tmp_path / "catalog-home"),
        "EXTRACT_CATALOG_NATS_URL": "",
    }
    process = ServiceProcess("services.catalog", tmp_path, env=env, port=port)
    try:
        process.start(timeout=60)
        yield process
    finally:
        process.stop()
