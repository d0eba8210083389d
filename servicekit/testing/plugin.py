"""pytest fixtures giving each test session real PostgreSQL, NATS JetStream and S3.

Fixture names are part of the harness contract (see tests/README.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import asyncpg
import pytest

from servicekit.infra import NatsServer, S3Endpoint, free_port
from servicekit.testing import sources
from servicekit.testing.sources import Unavailable, run_sync


@pytest.fixture(autouse=True)
def extract_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own $EXTRACT_HOME, so no state (keys, SQLite files) lands in the checkout."""
    home = tmp_path / "extract-home"
    monkeypatch.setenv("EXTRACT_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """libpq URL (`postgresql://…/postgres`) of a server where we may create databases."""
    with ExitStack() as stack:
        try:
            url = stack.enter_context(sources.postgres_server(stack))
        except Unavailable as exc:
            pytest.skip(str(exc))
        yield url


def _database_url(server_url: str, name: str) -> str:
    base = server_url.rsplit("/", 1)[0]
    return f"{base}/{name}"


@contextmanager
def _fresh_database(postgres_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database (asyncpg SQLAlchemy URL), dropped on exit."""
    name = f"extract_test_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    run_sync(create)
    url = _database_url(postgres_url, name)
    yield url.replace("postgresql://", "postgresql+asyncpg://", 1)
    run_sync(drop)


@pytest.fixture
def pg_database_url(postgres_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database (asyncpg SQLAlchemy URL), dropped afterwards."""
    with _fresh_database(postgres_url) as url:
        yield url


@pytest.fixture(scope="module")
def pg_module_database_url(postgres_url: str) -> Iterator[str]:
    """As pg_database_url, shared by a module's tests: for a costly set-up that they only
    read (a seeded table, say)."""
    with _fresh_database(postgres_url) as url:
        yield url


@pytest.fixture
def sqlite_database_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'test.sqlite'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using it runs once on SQLite and once on PostgreSQL."""
    fixture = "sqlite_database_url" if request.param == "sqlite" else "pg_database_url"
    return request.getfixturevalue(fixture)


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    with ExitStack() as stack:
        yield stack.enter_context(sources.nats_server_url(stack))


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A private NATS + JetStream process a test may stop and start again (same port, store)."""
    server = NatsServer(
        port=free_port(), store_dir=tmp_path / "jetstream", log_path=tmp_path / "nats.log"
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_regions() -> Iterator[dict[str, S3Endpoint]]:
    """Two independent S3 servers: `local:edge` and `local:cloud`."""
    with ExitStack() as stack:
        yield stack.enter_context(sources.s3_regions(stack))


@pytest.fixture(scope="session")
def s3_endpoint(s3_regions: dict[str, S3Endpoint]) -> S3Endpoint:
    return s3_regions["local:edge"]


@pytest.fixture(scope="session")
def identity_key():  # -> SigningKey
    from servicekit.security import SigningKey

    return SigningKey.generate()


@pytest.fixture(scope="session")
def identity_jwks_path(identity_key, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JWKS file holding the session's identity key, as services are configured with."""
    from servicekit.security import write_jwks

    path = tmp_path_factory.mktemp("identity") / "identity.jwks.json"
    write_jwks(path, [identity_key])
    return path


@pytest.fixture(scope="session")
def mint_token(identity_key) -> Callable[..., str]:
    """mint_token("user/alice", claims=["group/x"], ttl=300) -> a bearer identity token."""
    from servicekit.security import issue_identity_token

    def mint(principal: str, claims: tuple[str, ...] | list[str] = (), ttl: float = 300) -> str:
        return issue_identity_token(identity_key, principal, claims, ttl=ttl)

    return mint
