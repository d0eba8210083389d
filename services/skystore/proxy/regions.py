"""The regions behind the proxy: one open S3 client each, and the latency/cost profile."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any

from aiobotocore.client import AioBaseClient

from servicekit.errors import ServiceUnavailable
from servicekit.s3 import s3_client
from services.skystore.credentials import endpoint_of
from services.skystore.proxy.locator_client import LocatorClient
from services.skystore.proxy.s3http import S3Http
from services.skystore.proxy.seaweed_reads import SeaweedReader
from services.skystore.proxy.seaweed_writes import SeaweedWriter
from services.skystore.schemas import Link, Region
from services.skystore.settings import SeaweedAccess

__all__ = ["Regions"]


class Regions:
    """`async with Regions(locator, local) as regions:` then `regions.client(name)` (aiobotocore)
    or `regions.http(name)` (the object data path); `regions.seaweed(name)` reads the volume
    servers of the SeaweedFS regions in `seaweedfs` (seaweed_reads.py), and
    `regions.seaweed_writer(name)` writes through their filers (seaweed_writes.py)."""

    def __init__(
        self,
        locator: LocatorClient,
        local: str,
        seaweedfs: Mapping[str, SeaweedAccess] | None = None,
        *,
        timeout: float = 60.0,
    ) -> None:
        self.local = local
        self._locator = locator
        self._seaweed = {
            name: SeaweedReader(name, access, timeout=timeout)
            for name, access in (seaweedfs or {}).items()
        }
        self._seaweed_writers = {
            name: SeaweedWriter(access, self._seaweed[name], timeout=timeout)
            for name, access in (seaweedfs or {}).items()
        }
        self._stack = AsyncExitStack()
        self._clients: dict[str, AioBaseClient] = {}
        self._http: dict[str, S3Http] = {}
        self._regions: dict[str, Region] = {}
        self._links: dict[tuple[str, str], Link] = {}

    async def __aenter__(self) -> Regions:
        await self.refresh()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._stack.aclose()
        for reader in self._seaweed.values():
            await reader.aclose()

    async def refresh(self) -> None:
        """Open clients for regions registered since the last look; reload the profile."""
        for region in await self._locator.regions():
            if region.name not in self._clients or self._regions[region.name] != region:
                endpoint = endpoint_of(region)
                client = await self._stack.enter_async_context(s3_client(endpoint))
                self._clients[region.name] = client
                self._http[region.name] = http = S3Http(endpoint)
                self._stack.push_async_callback(http.aclose)
            self._regions[region.name] = region
        self._links = {(link.src, link.dst): link for link in await self._locator.links()}

    @property
    def names(self) -> list[str]:
        return sorted(self._regions)

    def client(self, name: str) -> AioBaseClient:
        client = self._clients.get(name)
        if client is None:
            raise ServiceUnavailable(f"region {name!r} is not known to this proxy")
        return client

    def http(self, name: str) -> S3Http:
        http = self._http.get(name)
        if http is None:
            raise ServiceUnavailable(f"region {name!r} is not known to this proxy")
        return http

    def seaweed(self, name: str) -> SeaweedReader | None:
        return self._seaweed.get(name)

    def seaweed_writer(self, name: str) -> SeaweedWriter | None:
        return self._seaweed_writers.get(name)

    def distance(self, src: str, dst: str) -> tuple[float, float]:
        """(latency ms, egress $/GB) of reading from `src` into `dst`; unknown links last."""
        if src == dst:
            return (0.0, 0.0)
        link = self._links.get((src, dst))
        return (link.latency_ms, link.egress_cost) if link else (float("inf"), float("inf"))
