"""What every handler works with: the locator, the regions, the clock, and shared steps."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client import Counter

from servicekit.errors import ExtractError, ServiceUnavailable
from services.skystore.policies import choose_read
from services.skystore.proxy.auth import Caller, authorise
from services.skystore.proxy.locator_client import LocatorClient
from services.skystore.proxy.object_cache import ObjectCache
from services.skystore.proxy.regions import Regions
from services.skystore.schemas import Bucket, Garbage, Locator, ObjectInfo, UploadComplete
from services.skystore.settings import ProxySettings

__all__ = ["Proxy"]

log = logging.getLogger(__name__)


@dataclass
class Proxy:
    settings: ProxySettings
    locator: LocatorClient
    regions: Regions
    clock: Callable[[], datetime]
    bytes_read: Counter
    cache: ObjectCache
    records_served: Counter  # object records used, by source: cache or locator
    bodies: Counter  # GET and PUT bodies, by op and path: buffered, stream or relay
    # Bucket records for authorisation, kept briefly: owners never change, and every write or
    # read is checked against the locator's own view of the bucket anyway.
    bucket_ttl: float = 2.0
    # A replica read often is touched once per this many seconds, not per read: each touch is a
    # write transaction on the locator (a copy_on_read replica read 100 times a second would
    # cost it 100 writes a second); eviction is at most this much early.
    touch_every: float = 1.0
    _buckets: dict[str, tuple[float, Bucket]] = field(default_factory=dict)
    _touched: dict[int, float] = field(default_factory=dict)  # replica id: next touch due
    _background: set[asyncio.Task[None]] = field(default_factory=set)

    async def count_read(self, chunks: AsyncIterator[bytes], source: str) -> AsyncIterator[bytes]:
        """Bytes served, by the region they came from and the one they were served in."""
        counter = self.bytes_read.labels(source=source, served=self.region)
        async for chunk in chunks:
            counter.inc(len(chunk))
            yield chunk

    def relays(self, copy: Locator, length: int) -> bool:
        """Whether a body of `length` bytes from or to `copy` goes between the sockets past
        the ASGI stack (a client connection that allows it is the caller's to check)."""
        least = self.settings.relay_min_bytes
        return 0 < least <= length and self.regions.http(copy.region).relays

    def count_bytes(self, count: int, source: str) -> None:
        """count_read for a body taken whole, or relayed past Python once it is through."""
        self.bytes_read.labels(source=source, served=self.region).inc(count)

    @property
    def region(self) -> str:
        return self.regions.local

    async def bucket(self, name: str, caller: Caller, *, write: bool) -> Bucket:
        now = time.monotonic()
        cached = self._buckets.get(name)
        if cached is None or cached[0] <= now:
            if len(self._buckets) > 10_000:
                self._buckets.clear()
            cached = (now + self.bucket_ttl, await self.locator.bucket(name))
            self._buckets[name] = cached
        authorise(cached[1], caller, write=write)
        return cached[1]

    async def object(self, bucket: str, key: str, *, cached: bool = True) -> ObjectInfo:
        """The object's record: from the cache under a live lease when `cached` (asked for
        again in the background once due), else (and then kept, when the locator grants a
        lease) from the locator."""
        if cached and (info := self.cache.get(bucket, key)) is not None:
            self.records_served.labels(source="cache").inc()
            if self.cache.due(bucket, key):
                self._in_background(self._renew(bucket, key))
            return info
        info = await self._look_up(bucket, key)
        self.records_served.labels(source="locator").inc()
        return info

    async def _look_up(self, bucket: str, key: str) -> ObjectInfo:
        asked_at = self.cache.clock()
        info, lease = await self.locator.object(bucket, key, holder=self.cache.asking)
        self.cache.keep(info, lease, asked_at)
        return info

    async def _renew(self, bucket: str, key: str) -> None:
        try:
            await self._look_up(bucket, key)
        except ExtractError as exc:  # gone meanwhile, or the locator is down: it lapses
            log.info("could not renew the record of %s/%s: %s", bucket, key, exc)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def note_read(self, copy: Locator) -> None:
        """Restart the copy's TTL, off the request's path: a lost touch only evicts earlier."""
        now = time.monotonic()
        if self._touched.get(copy.id, 0.0) > now:
            return
        if len(self._touched) > 10_000:
            self._touched = {i: due for i, due in self._touched.items() if due > now}
        self._touched[copy.id] = now + self.touch_every
        self._in_background(self._touch(copy.id))

    async def _touch(self, locator_id: int) -> None:
        try:
            await self.locator.replica_read(locator_id)
        except ExtractError as exc:
            log.warning("could not record a read of replica %d: %s", locator_id, exc)

    def forget_bucket(self, name: str) -> None:
        self._buckets.pop(name, None)

    def read_copy(self, info: ObjectInfo) -> Locator:
        copy = choose_read(info.locators, self.region, self.regions.distance)
        if copy is None:
            raise ServiceUnavailable(f"no ready copy of {info.key!r} in any region")
        return copy

    async def open_copy(
        self, copy: Locator, *, range_header: str | None = None
    ) -> tuple[Mapping[str, str], AsyncIterator[bytes]]:
        """GET on the physical copy: (the response headers, its body as chunks)."""
        http = self.regions.http(copy.region)
        return await http.get(copy.physical_bucket, copy.physical_key, range_header=range_header)

    async def commit(self, object_id: int, done: UploadComplete) -> ObjectInfo:
        """Complete a write and remove the copies of the version it replaced."""
        asked_at = self.cache.clock()
        committed, lease = await self.locator.complete_upload(
            object_id, done, holder=self.cache.asking
        )
        self.cache.keep(committed.object, lease, asked_at)
        await self.remove(committed.retired)
        return committed.object

    async def remove(self, garbage: list[Garbage]) -> None:
        """Delete physical copies now, and tell the locator which are gone; the locator's
        collector retries whatever fails here."""
        removed = []
        for item in garbage:
            try:
                client = self.regions.client(item.region)
                if item.physical_upload_id:
                    with contextlib.suppress(ClientError):
                        await client.abort_multipart_upload(
                            Bucket=item.physical_bucket,
                            Key=item.physical_key,
                            UploadId=item.physical_upload_id,
                        )
                await client.delete_object(Bucket=item.physical_bucket, Key=item.physical_key)
                removed.append(item.locator_id)
            except (BotoCoreError, ClientError, ServiceUnavailable) as exc:
                log.warning(
                    "leaving %s/%s to the collector: %s", item.region, item.physical_key, exc
                )
        if removed:
            try:
                await self.locator.garbage_removed(removed)
            except ServiceUnavailable as exc:
                log.warning("locator unreachable; the collector will tidy up: %s", exc)
