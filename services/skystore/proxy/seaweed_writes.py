"""Large PUTs written to a SeaweedFS region through its filer, past its S3 gateway.

SeaweedFS's S3 gateway passes a PUT's body on to its filer, which cuts it into chunks on the
volume servers: one more process that every byte crosses. Measured on this project's machine,
a 64 MiB PUT took 406 ms p50 straight to the filer against 490 ms through the S3 API. A proxy
that may reach the region's filer (`EXTRACT_SKYSTORE_PROXY_SEAWEEDFS`, as for reads) writes a
body of known length read off the client's socket with one filer PUT of the physical key.

The filer computes the MD5 of what it stored (its entry's `Md5`, the ETag its S3 gateway
reports); the writer reads the entry back, checks its size, and returns that MD5 as the ETag.
The entry is kept by the region's SeaweedReader, so the first read of the object needs no
filer lookup. A filer PUT cut short stores nothing under the key; the caller rolls the upload
back on any error, as for the S3 path. A filer that does not take the connection raises
`NotWritable` before any of the body is read, and the caller writes through the S3 API.
"""

from __future__ import annotations

import base64
import http.client
from collections.abc import Callable
from urllib.parse import quote, urlsplit

from servicekit.errors import NotFound, ServiceUnavailable, UpstreamError
from servicekit.socket_relay import RelayError, in_relay_thread, put_from_socket
from services.skystore.proxy.s3http import incomplete_body
from services.skystore.proxy.seaweed_reads import NotReadable, SeaweedReader
from services.skystore.settings import SeaweedAccess

__all__ = ["NotWritable", "SeaweedWriter"]


class NotWritable(Exception):
    """The region's filer cannot be reached now; nothing of the body has been read."""


class SeaweedWriter:
    """Writes one region's physical objects through its filer (module doc)."""

    def __init__(self, access: SeaweedAccess, reader: SeaweedReader, *, timeout: float) -> None:
        filer = urlsplit(access.filer)
        self._filer = (filer.hostname or "", filer.port or 80)
        self._folder = access.buckets_folder.rstrip("/")
        self._reader = reader
        self._timeout = timeout

    @property
    def region(self) -> str:
        return self._reader.region

    async def connect(self) -> http.client.HTTPConnection:
        """A fresh connection to the filer, for one put_from_socket; NotWritable."""
        connection = http.client.HTTPConnection(*self._filer, timeout=self._timeout)
        try:
            await in_relay_thread(connection.connect)
        except OSError as exc:
            connection.close()
            raise NotWritable(f"the filer of region {self.region}: {exc}") from exc
        return connection

    async def put_from_socket(
        self,
        connection: http.client.HTTPConnection,
        bucket: str,
        key: str,
        body: tuple[bytes, int | None, int],
        digest: Callable[[memoryview], None],
        *,
        stall_timeout: float,
    ) -> str:
        """Store a body under bucket/key on `connection` (from `connect`, closed after): `body`
        is (the bytes read, the client's socket or None, the length); each piece is passed to
        `digest` before it goes on. The ETag (the MD5 the filer computed) without quotes."""
        length = body[2]
        path = quote(f"{self._folder}/{bucket}/{key}", safe="/~")
        headers = {
            "host": f"{self._filer[0]}:{self._filer[1]}",
            "content-length": str(length),
            "content-type": "application/octet-stream",
        }
        try:
            status, _, answer = await put_from_socket(
                connection, path, headers, body, digest, stall_timeout=stall_timeout
            )
        except RelayError as exc:
            raise incomplete_body(exc) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise ServiceUnavailable(
                f"the filer of region {self.region} failed during a PUT: {exc}",
                detail={"bucket": bucket, "key": key},
            ) from exc
        if status not in (200, 201):
            raise UpstreamError(
                f"the filer of region {self.region} answered {status} to a PUT: "
                f"{answer[:200].decode(errors='replace')}"
            )
        return await self._stored_etag(bucket, key, length)

    async def _stored_etag(self, bucket: str, key: str, length: int) -> str:
        try:
            entry = await self._reader.entry(bucket, key, fresh=True)
        except (NotReadable, NotFound) as exc:
            raise UpstreamError(
                f"the filer of region {self.region} does not show the object it took: {exc}"
            ) from exc
        size, md5 = entry.get("FileSize"), entry.get("Md5")
        if size != length or not md5:
            raise UpstreamError(
                f"the filer of region {self.region} holds {size} bytes (MD5 {md5!r}) for a PUT "
                f"of {length}"
            )
        return base64.b64decode(md5).hex()
