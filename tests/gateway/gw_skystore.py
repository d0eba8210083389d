"""A real SkyStore behind the gateway's S3 port: the locator and one proxy (region local:edge)
over the harness's SeaweedFS, with one access key for user/alice. The proxy caches access keys
for KEY_CACHE_SECONDS, so a revoked key stops working within that."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from servicekit.infra.ports import free_port
from servicekit.infra.seaweed import S3Endpoint
from servicekit.testing import ServiceProcess

REGION = "local:edge"
KEY_CACHE_SECONDS = 1.0


@dataclass(frozen=True)
class SkyStore:
    proxy: ServiceProcess
    key_id: str
    secret: str
    locator: ServiceProcess
    token_file: Path

    def locator_get(self, path: str) -> httpx.Response:
        """GET on the locator's internal API, with its token."""
        token = self.token_file.read_text().strip()
        return httpx.get(
            f"{self.locator.url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )


@pytest.fixture(scope="session")
def skystore(
    tmp_path_factory: pytest.TempPathFactory, s3_regions: dict[str, S3Endpoint]
) -> Iterator[SkyStore]:
    root = tmp_path_factory.mktemp("gw-skystore")
    edge = s3_regions[REGION]
    ini = root / "s3-regions.ini"
    ini.write_text(
        f"[{REGION}]\naws_access_key_id = {edge.access_key}\n"
        f"aws_secret_access_key = {edge.secret_key}\n"
    )
    regions = [{"name": REGION, "endpoint": edge.url, "credentials": f"file:{ini}#{REGION}"}]
    (root / "regions.json").write_text(json.dumps({"regions": regions, "links": []}))
    common = {
        "EXTRACT_HOME": str(root),
        "EXTRACT_SKYSTORE_INTERNAL_TOKEN": str(root / "token"),
        "EXTRACT_SKYSTORE_PROXY_INTERNAL_TOKEN": str(root / "token"),
    }
    locator_port = free_port()
    locator = ServiceProcess(
        "services.skystore.locator",
        root,
        env={
            **common,
            "EXTRACT_SKYSTORE_PORT": str(locator_port),
            "EXTRACT_SKYSTORE_DATABASE_URL": f"sqlite+aiosqlite:///{root / 'locator.sqlite'}",
            "EXTRACT_SKYSTORE_REGIONS_FILE": str(root / "regions.json"),
            "EXTRACT_SKYSTORE_REAPER_INTERVAL": "0",
            "EXTRACT_SKYSTORE_NATS_URL": "",
        },
        port=locator_port,
    )
    proxy_dir = root / "proxy"
    proxy_dir.mkdir()
    proxy_port = free_port()
    with ExitStack() as stop:
        locator.start(timeout=60)
        stop.callback(locator.stop)
        proxy = ServiceProcess(
            "services.skystore.proxy",
            proxy_dir,
            env={
                **common,
                "EXTRACT_SKYSTORE_PROXY_PORT": str(proxy_port),
                "EXTRACT_SKYSTORE_PROXY_REGION": REGION,
                "EXTRACT_SKYSTORE_PROXY_LOCATOR_URL": locator.url,
                "EXTRACT_SKYSTORE_PROXY_KEY_CACHE_SECONDS": str(KEY_CACHE_SECONDS),
            },
            port=proxy_port,
        )
        proxy.start(timeout=60)
        stop.callback(proxy.stop)
        token = (root / "token").read_text().strip()
        response = httpx.post(
            f"{locator.url}/access-keys",
            json={"principal": "user/alice"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        response.raise_for_status()
        key = response.json()
        yield SkyStore(proxy, key["key_id"], key["secret"], locator, root / "token")
