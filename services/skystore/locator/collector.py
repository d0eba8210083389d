"""The locator's background sweep: roll back stale operations, then remove physical garbage."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicekit.db import Clock, utc_now
from servicekit.errors import ExtractError
from servicekit.inbox import purge_processed
from servicekit.infra.seaweed import S3Endpoint
from servicekit.s3 import S3Client, s3_client
from services.skystore.credentials import endpoint_of
from services.skystore.locator import reaper, replicas
from services.skystore.locator.eviction import bucket_ttl
from services.skystore.locator.registry import list_links, list_regions
from services.skystore.locator.replication import Replicator
from services.skystore.policies import PUSH
from services.skystore.schemas import Garbage, PhysicalBucket

__all__ = ["Collector", "Sweep"]

log = logging.getLogger(__name__)

_GONE = {"NoSuchKey", "NoSuchUpload", "NoSuchBucket", "404"}
# The push worker's inbox outlives the SKYSTORE stream's 7-day retention by a day.
INBOX_KEEP = timedelta(days=8)


@dataclass(frozen=True)
class Sweep:
    rolled_back: int
    removed: int
    buckets_removed: int
    evicted: int = 0
    replicated: int = 0


class Collector:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        pending_timeout: float,
        multipart_timeout: float,
        interval: float,
        eviction: str = "none",
        replica_ttl: float = 24 * 3600.0,
        clock: Clock = utc_now,
        client_factory: Callable[[S3Endpoint], S3Client] = s3_client,
    ) -> None:
        self._sessions = sessions
        self._pending = timedelta(seconds=pending_timeout)
        self._multipart = timedelta(seconds=multipart_timeout)
        self._interval = interval
        self._eviction = eviction
        self._replica_ttl = timedelta(seconds=replica_ttl)
        self._clock = clock
        self._client_factory = client_factory
        self._replicator = Replicator(sessions, clock=clock, client_factory=client_factory)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="skystore-collector")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except Exception:
                log.exception("garbage sweep failed; retrying in %.0f s", self._interval)
            await asyncio.sleep(self._interval)

    async def sweep_once(self) -> Sweep:
        now = self._clock()
        async with self._sessions.begin() as session:
            rolled_back = await reaper.roll_back_stale(
                session, uploads_before=now - self._pending, multipart_before=now - self._multipart
            )
            # Events older than the stream keeps them cannot be redelivered: forget them.
            await purge_processed(session, before=now - INBOX_KEEP)
        async with self._sessions() as session:
            known = await list_regions(session)
            links = await list_links(session)
        endpoints = {r.name: endpoint_of(r) for r in known}
        rule = bucket_ttl(self._eviction, fixed=self._replica_ttl, regions=known, links=links)
        async with self._sessions.begin() as session:
            evicted = await replicas.evict_expired(session, now=now, ttl_for=rule)
        replicated = await self._push()
        async with self._sessions() as session:
            work = await reaper.garbage(session)
            doomed = await reaper.stale_buckets(session)
        removed = [g.locator_id for g in work if await self._remove(endpoints, g)]
        async with self._sessions.begin() as session:
            await reaper.forget_garbage(session, locator_ids=removed)
        emptied = [
            name
            for name, physical in doomed.items()
            if all([await self._remove_bucket(endpoints, p) for p in physical])
        ]
        if emptied:
            async with self._sessions.begin() as session:
                await reaper.forget_buckets(session, names=emptied)
        done = Sweep(rolled_back, len(removed), len(emptied), len(evicted), replicated)
        if any((rolled_back, removed, emptied, evicted, replicated)):
            log.info("sweep: %s", done)
        return done

    async def _push(self) -> int:
        """The safety net of push replication: copies the push worker has not made (events
        missed while NATS was down, failed copies, a locator restart mid-copy)."""
        async with self._sessions() as session:
            wanted = await replicas.missing_replicas(session, policy=PUSH)
        copied = 0
        for object_id, region, source in wanted:
            try:
                copied += await self._replicator.replicate(object_id, region, source)
            except ExtractError as exc:  # the push worker started this copy meanwhile
                log.info("push of object %d to %s skipped: %s", object_id, region, exc)
        return copied

    async def _remove(self, endpoints: dict[str, S3Endpoint], item: Garbage) -> bool:
        endpoint = endpoints.get(item.region)
        if endpoint is None:
            return False
        try:
            async with self._client_factory(endpoint) as client:
                # A proxy that died mid-PUT may have left a multipart upload of its own,
                # whose id only the region knows.
                listed = await client.list_multipart_uploads(
                    Bucket=item.physical_bucket, Prefix=item.physical_key
                )
                for upload in listed.get("Uploads", []):
                    if upload["Key"] == item.physical_key:
                        with contextlib.suppress(ClientError):
                            await client.abort_multipart_upload(
                                Bucket=item.physical_bucket,
                                Key=item.physical_key,
                                UploadId=upload["UploadId"],
                            )
                await client.delete_object(Bucket=item.physical_bucket, Key=item.physical_key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _GONE:
                return True
            log.warning(
                "cannot remove %s/%s in %s: %s",
                item.physical_bucket,
                item.physical_key,
                item.region,
                exc,
            )
            return False
        except BotoCoreError as exc:
            log.warning("region %s unreachable while collecting garbage: %s", item.region, exc)
            return False
        return True

    async def _remove_bucket(
        self, endpoints: dict[str, S3Endpoint], bucket: PhysicalBucket
    ) -> bool:
        endpoint = endpoints.get(bucket.region)
        if endpoint is None:
            return False
        try:
            async with self._client_factory(endpoint) as client:
                paginator = client.get_paginator("list_objects_v2")
                async for page in paginator.paginate(Bucket=bucket.name):
                    for item in page.get("Contents", []):
                        await client.delete_object(Bucket=bucket.name, Key=item["Key"])
                await client.delete_bucket(Bucket=bucket.name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _GONE:
                return True
            log.warning("cannot remove bucket %s in %s: %s", bucket.name, bucket.region, exc)
            return False
        except BotoCoreError as exc:
            log.warning("region %s unreachable while removing buckets: %s", bucket.region, exc)
            return False
        return True
