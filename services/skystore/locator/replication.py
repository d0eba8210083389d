"""Copying one listed version into another region: phase one, the bytes, then phase two."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicekit.db import Clock, utc_now
from servicekit.errors import ExtractError
from servicekit.infra.seaweed import S3Endpoint
from servicekit.s3 import S3Client, s3_client, upload_stream
from services.skystore.credentials import endpoint_of
from services.skystore.locator import replicas
from services.skystore.locator.registry import list_regions
from services.skystore.schemas import Locator

__all__ = ["Replicator"]

log = logging.getLogger(__name__)

# What a failed copy raises: the region's S3 errors, a copy the locator no longer wants, or a
# region it does not know.
COPY_FAILURES = (BotoCoreError, ClientError, ExtractError, KeyError)


class Replicator:
    """Makes replicas for the locator's own workers (the push worker and the sweep)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        clock: Clock = utc_now,
        client_factory: Callable[[S3Endpoint], S3Client] = s3_client,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._client_factory = client_factory

    async def endpoints(self) -> dict[str, S3Endpoint]:
        async with self._sessions() as session:
            return {r.name: endpoint_of(r) for r in await list_regions(session)}

    async def replicate(self, object_id: int, region: str, source: Locator) -> bool:
        """Start, copy and complete one replica; False (and nothing left behind) on failure."""
        async with self._sessions.begin() as session:
            target = await replicas.start_replica(
                session, object_id=object_id, region=region, now=self._clock()
            )
        return await self.finish(source, target)

    async def finish(self, source: Locator, target: Locator) -> bool:
        """Copy `source` into the started replica `target` and complete it, else abort it (its
        bytes become garbage and the sweep tries again later)."""
        try:
            await self.copy(await self.endpoints(), source, target)
        except COPY_FAILURES as exc:
            log.warning(
                "replica %d in %s failed, the sweep retries it: %s", target.id, target.region, exc
            )
            async with self._sessions.begin() as session:
                await replicas.abort_replica(session, locator_id=target.id)
            return False
        async with self._sessions.begin() as session:
            await replicas.complete_replica(session, locator_id=target.id, now=self._clock())
        return True

    async def copy(
        self, endpoints: dict[str, S3Endpoint], source: Locator, target: Locator
    ) -> None:
        async with (
            self._client_factory(endpoints[source.region]) as reader,
            self._client_factory(endpoints[target.region]) as writer,
        ):
            response = await reader.get_object(
                Bucket=source.physical_bucket, Key=source.physical_key
            )
            body = response["Body"]

            async def chunks() -> AsyncIterator[bytes]:
                try:
                    async for chunk in body.iter_chunks(256 * 1024):
                        yield chunk
                finally:
                    body.close()

            await upload_stream(writer, target.physical_bucket, target.physical_key, chunks())
