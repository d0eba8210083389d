"""Fixtures for SkyStore tests: a migrated locator database and its sessions."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicekit.db import create_engine, session_factory
from servicekit.infra.nats import NatsServer
from servicekit.infra.ports import free_port
from servicekit.infra.seaweed import S3Endpoint, seaweed_access
from servicekit.migrate import migrate_service_database
from servicekit.testing import ServiceProcess
from services.skystore.locator.app import MIGRATIONS, VERSION_TABLE
from services.skystore.schemas import Region


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    await migrate_service_database(database_url, MIGRATIONS, VERSION_TABLE)
    engine = create_engine(database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def skystore_regions(tmp_path: Path, s3_regions: dict[str, S3Endpoint]) -> list[Region]:
    """The two SeaweedFS regions as the locator registers them, credentials in an ini file."""
    ini = tmp_path / "s3-regions.ini"
    ini.write_text(
        "".join(
            f"[{name}]\naws_access_key_id = {e.access_key}\n"
            f"aws_secret_access_key = {e.secret_key}\n"
            for name, e in s3_regions.items()
        )
    )
    return [
        Region(name=name, endpoint=e.url, credentials=f"file:{ini}#{name}")
        for name, e in s3_regions.items()
    ]


@pytest.fixture
def physical(s3_regions: dict[str, S3Endpoint]) -> Callable[[str], Any]:
    """physical("local:edge") -> a boto3 client straight on that SeaweedFS region."""

    def client(region: str) -> Any:
        endpoint = s3_regions[region]
        return boto3.client(
            "s3",
            endpoint_url=endpoint.url,
            aws_access_key_id=endpoint.access_key,
            aws_secret_access_key=endpoint.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )

    return client


@dataclass
class Stack:
    """A locator and its proxies as real uvicorn processes, with one access key."""

    locator: ServiceProcess
    proxies: dict[str, ServiceProcess]
    token: str
    key_id: str
    secret: str
    nats_url: str = ""
    root: Path = Path()

    def client(self, region: str = "local:edge", *, url: str | None = None, **config: Any) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=url or self.proxies[region].url,
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4", **config),
        )

    def locator_call(self, method: str, path: str, **kw: Any) -> Any:
        response = httpx.request(
            method,
            f"{self.locator.url}{path}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
            **kw,
        )
        response.raise_for_status()
        return response.json()

    def new_key(self, principal: str) -> tuple[str, str]:
        key = self.locator_call("POST", "/access-keys", json={"principal": principal})
        return key["key_id"], key["secret"]

    def proxy_process(
        self, region: str, name: str, *, verify: ssl.SSLContext | bool = True, **env: str
    ) -> ServiceProcess:
        """A proxy of `region` on this stack's locator (not started), `env` added; https when
        `env` names a TLS certificate, checked with the client context `verify`."""
        log_dir = self.root / name
        log_dir.mkdir(exist_ok=True)
        port = free_port()
        return ServiceProcess(
            "services.skystore.proxy",
            log_dir,
            env={
                "EXTRACT_HOME": str(self.root),
                "EXTRACT_SKYSTORE_PROXY_INTERNAL_TOKEN": str(self.root / "token"),
                "EXTRACT_SKYSTORE_PROXY_PORT": str(port),
                "EXTRACT_SKYSTORE_PROXY_REGION": region,
                "EXTRACT_SKYSTORE_PROXY_LOCATOR_URL": self.locator.url,
                # Revocations of cached object records come over the stack's NATS, if any.
                "EXTRACT_SKYSTORE_PROXY_NATS_URL": self.nats_url,
                **env,
            },
            port=port,
            scheme="https" if "EXTRACT_SKYSTORE_PROXY_TLS_CERT" in env else "http",
            verify=verify,  # type: ignore[arg-type]  # httpx takes a context, not a CA path
        )


@contextmanager
def run_stack(
    root: Path,
    s3_regions: dict[str, S3Endpoint],
    *,
    nats_url: str,
    proxies: tuple[str, ...] = ("local:edge", "local:cloud"),
    proxy_env: Mapping[str, str] | None = None,
    **locator_env: str,
) -> Iterator[Stack]:
    """A locator (SQLite, sweeps only on POST /sweep) and one proxy per region in `proxies`,
    `proxy_env` added to each proxy's."""
    ini = root / "s3-regions.ini"
    ini.write_text(
        "".join(
            f"[{name}]\naws_access_key_id = {e.access_key}\n"
            f"aws_secret_access_key = {e.secret_key}\n"
            for name, e in s3_regions.items()
        )
    )
    regions = [
        {"name": name, "endpoint": e.url, "credentials": f"file:{ini}#{name}"}
        for name, e in s3_regions.items()
    ]
    links = [
        {"src": "local:edge", "dst": "local:cloud", "latency_ms": 20, "egress_cost": 0.09},
        {"src": "local:cloud", "dst": "local:edge", "latency_ms": 20, "egress_cost": 0.09},
    ]
    (root / "regions.json").write_text(json.dumps({"regions": regions, "links": links}))
    port = free_port()
    locator = ServiceProcess(
        "services.skystore.locator",
        root,
        env={
            "EXTRACT_HOME": str(root),
            "EXTRACT_SKYSTORE_INTERNAL_TOKEN": str(root / "token"),
            "EXTRACT_SKYSTORE_PORT": str(port),
            "EXTRACT_SKYSTORE_DATABASE_URL": f"sqlite+aiosqlite:///{root / 'locator.sqlite'}",
            "EXTRACT_SKYSTORE_REGIONS_FILE": str(root / "regions.json"),
            "EXTRACT_SKYSTORE_REAPER_INTERVAL": "0",  # tests sweep by POST /sweep
            "EXTRACT_SKYSTORE_PENDING_TIMEOUT": "5",
            "EXTRACT_SKYSTORE_MULTIPART_TIMEOUT": "5",
            "EXTRACT_SKYSTORE_EVICTION": "fixed_ttl",
            "EXTRACT_SKYSTORE_REPLICA_TTL": "2",
            "EXTRACT_SKYSTORE_NATS_URL": nats_url,
            **locator_env,
        },
        port=port,
    )
    with ExitStack() as stop:
        locator.start()
        stop.callback(locator.stop)
        token = (root / "token").read_text().strip()
        partial = Stack(locator, {}, token, "", "", nats_url, root)
        for region in proxies:
            proxy = partial.proxy_process(region, region.replace(":", "-"), **(proxy_env or {}))
            proxy.start()
            stop.callback(proxy.stop)
            partial.proxies[region] = proxy
        key_id, secret = partial.new_key("user/alice")
        yield Stack(locator, partial.proxies, token, key_id, secret, nats_url, root)


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory, s3_regions: dict[str, S3Endpoint]
) -> Iterator[Stack]:
    """The shared stack, on a NATS of its own: the push worker's durable consumer must not
    meet other test sessions' SKYSTORE events on a shared server."""
    root = tmp_path_factory.mktemp("skystore")
    nats = NatsServer(port=free_port(), store_dir=root / "nats", log_path=root / "nats.log")
    nats.start()
    try:
        with run_stack(root, s3_regions, nats_url=nats.url) as running:
            yield running
    finally:
        nats.stop()


@pytest.fixture
def run_skystore(s3_regions: dict[str, S3Endpoint]) -> Callable[..., Any]:
    """run_skystore(root, nats_url=…, proxies=…, **locator_env): a private stack (a context)."""

    def run(root: Path, **options: Any) -> Any:
        return run_stack(root, s3_regions, **options)

    return run


@pytest.fixture(scope="module")
def seaweed_stack(
    tmp_path_factory: pytest.TempPathFactory, s3_regions: dict[str, S3Endpoint]
) -> Iterator[tuple[Stack, ServiceProcess]]:
    """A stack whose proxies read both regions' volume servers, and a second edge proxy told of
    a filer and master that do not answer."""
    access = seaweed_access(s3_regions.values())
    if len(access) < len(s3_regions):
        pytest.skip("the S3 regions are not SeaweedFS run by this test session")
    root = tmp_path_factory.mktemp("seaweed-reads")
    nats = NatsServer(port=free_port(), store_dir=root / "nats", log_path=root / "nats.log")
    nats.start()
    env = {"EXTRACT_SKYSTORE_PROXY_SEAWEEDFS": json.dumps(access)}
    try:
        with run_stack(root, s3_regions, nats_url=nats.url, proxy_env=env) as stack:
            dead = f"http://127.0.0.1:{free_port()}"
            blind = stack.proxy_process(
                "local:edge",
                "edge-blind",
                EXTRACT_SKYSTORE_PROXY_SEAWEEDFS=json.dumps(
                    {"local:edge": {"filer": dead, "master": dead}}
                ),
            )
            blind.start()
            try:
                yield stack, blind
            finally:
                blind.stop()
    finally:
        nats.stop()
