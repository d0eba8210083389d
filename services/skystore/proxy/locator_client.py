"""The proxy's client of the locator's internal API; its errors come back as servicekit errors."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

from nats.aio.client import Client
from pydantic import BaseModel, TypeAdapter

from servicekit.errors import ServiceUnavailable
from servicekit.upstream_http import ConnectionPool
from servicekit.upstream_response import UpstreamFailure, UpstreamTimeout, UpstreamUnreachable
from services.skystore.leases_wire import LEASE_HEADER, Lease
from services.skystore.proxy.locator_errors import locator_error
from services.skystore.proxy.nats_lookups import NatsLookups
from services.skystore.schemas import (
    AccessKey,
    Bucket,
    BucketCreate,
    Committed,
    Garbage,
    Link,
    ListPage,
    Locator,
    ObjectInfo,
    Region,
    UploadComplete,
    UploadStart,
)

__all__ = ["LocatorClient"]

M = TypeVar("M")
MAX_ANSWER = 64 * 1024 * 1024  # the largest answer read (a listing page is far smaller)


@functools.cache
def _adapter(into: Any) -> TypeAdapter[Any]:
    # Building an adapter costs more than the validation it does: one per answer type.
    return TypeAdapter(into)


def _json_bytes(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class LocatorClient:
    """Pooled keep-alive connections to the locator, on servicekit's HTTP/1.1 client: this call
    is inside every S3 request that misses the proxy's caches, and that client costs less CPU
    per request than aiohttp's or httpx's."""

    _LEASE = LEASE_HEADER.lower().encode()
    _IDEMPOTENT = frozenset({"GET", "HEAD"})

    def __init__(self, base_url: str, token: str, *, timeout: float = 10.0) -> None:
        self._base = base_url.rstrip("/")
        self._prefix = urlsplit(self._base).path
        self._headers = [(b"authorization", f"Bearer {token}".encode())]
        self._token = token
        self._timeout = timeout
        self._pool: ConnectionPool | None = None
        self._nats: NatsLookups | None = None

    def look_up_over_nats(self, connection: Callable[[], Client | None]) -> None:
        """Ask for object records over NATS, on `connection` while it is up, before REST."""
        self._nats = NatsLookups(self._token, connection, timeout=self._timeout)

    def _http(self) -> ConnectionPool:
        # Made on first use: its connections belong to the running event loop.
        if self._pool is None:
            self._pool = ConnectionPool.for_url(self._base, limit=100, timeout=self._timeout)
        return self._pool

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def _exchange(
        self,
        method: str,
        path: str,
        *,
        json: BaseModel | dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> tuple[bytes, Lease | None]:
        """(the answer's body, the lease it grants); errors raised as servicekit errors."""
        target = self._prefix + path  # escaped already (see _path), sent as it is
        if params:
            target += "?" + urlencode({k: str(v) for k, v in params.items()})
        headers, body = self._headers, None
        if json is not None:
            body = (
                json.model_dump_json().encode()
                if isinstance(json, BaseModel)
                else _json_bytes(json)
            )
            headers = [*headers, (b"content-type", b"application/json")]
        for attempt in (1, 2):
            try:
                response = await self._http().request(method, target, headers, body)
                content = await response.read(MAX_ANSWER)
                break
            except UpstreamFailure as exc:
                # A keep-alive connection the locator closed meanwhile fails a request that
                # may have reached it: asked again only when that cannot do harm.
                retry = isinstance(exc, UpstreamUnreachable) or (
                    method in self._IDEMPOTENT and not isinstance(exc, UpstreamTimeout)
                )
                if attempt == 2 or not retry:
                    raise ServiceUnavailable(f"the SkyStore locator is unreachable: {exc}") from exc
        if response.status >= 400:
            raise locator_error(response.status, content)
        lease = next((v for n, v in response.raw_headers if n.lower() == self._LEASE), None)
        return content, Lease.from_header(lease.decode("latin-1") if lease else None)

    async def _call(
        self,
        method: str,
        path: str,
        into: Any,
        *,
        json: BaseModel | dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        content, _ = await self._exchange(method, path, json=json, params=params)
        return None if into is None else _adapter(into).validate_json(content)

    async def regions(self) -> list[Region]:
        return await self._call("GET", "/regions", list[Region])

    async def links(self) -> list[Link]:
        return await self._call("GET", "/links", list[Link])

    async def access_key(self, key_id: str) -> AccessKey:
        return await self._call("GET", f"/access-keys/{key_id}", AccessKey)

    async def create_access_key(self, principal: str) -> AccessKey:
        return await self._call("POST", "/access-keys", AccessKey, json={"principal": principal})

    async def buckets(self, owner: str | None = None) -> list[Bucket]:
        params = {"owner": owner} if owner else None
        return await self._call("GET", "/buckets", list[Bucket], params=params)

    async def bucket(self, name: str) -> Bucket:
        return await self._call("GET", f"/buckets/{name}", Bucket)

    async def start_create_bucket(self, request: BucketCreate) -> Bucket:
        return await self._call("POST", "/buckets", Bucket, json=request)

    async def complete_create_bucket(self, name: str) -> Bucket:
        return await self._call("POST", f"/buckets/{name}/complete", Bucket)

    async def start_delete_bucket(self, name: str) -> Bucket:
        return await self._call("DELETE", f"/buckets/{name}", Bucket)

    async def bucket_removed(self, name: str) -> None:
        await self._call("POST", f"/buckets/{name}/removed", None)

    async def list_objects(self, bucket: str, **params: Any) -> ListPage:
        return await self._call("GET", f"/buckets/{bucket}/list", ListPage, params=params)

    async def object(
        self, bucket: str, key: str, *, holder: str | None = None
    ) -> tuple[ObjectInfo, Lease | None]:
        """The object's record, and a lease on it when `holder` asks for one."""
        if self._nats is not None:
            answer = await self._nats.object(bucket, key, holder)
            if answer is not None:
                return answer
        params = {"holder": holder} if holder else None
        path = f"/buckets/{bucket}/objects/{_path(key)}"
        content, lease = await self._exchange("GET", path, params=params)
        return ObjectInfo.model_validate_json(content), lease

    async def delete_object(self, bucket: str, key: str) -> list[Garbage]:
        return await self._call("DELETE", f"/buckets/{bucket}/objects/{_path(key)}", list[Garbage])

    async def uploads(self, bucket: str, prefix: str = "") -> list[ObjectInfo]:
        params = {"prefix": prefix}
        return await self._call(
            "GET", f"/buckets/{bucket}/multipart", list[ObjectInfo], params=params
        )

    async def upload(self, bucket: str, upload_id: str) -> ObjectInfo:
        return await self._call("GET", f"/buckets/{bucket}/multipart/{upload_id}", ObjectInfo)

    async def start_upload(self, request: UploadStart) -> ObjectInfo:
        return await self._call("POST", "/uploads", ObjectInfo, json=request)

    async def set_physical_upload(self, object_id: int, region: str, upload_id: str) -> None:
        body = {"region": region, "physical_upload_id": upload_id}
        await self._call("PUT", f"/uploads/{object_id}/physical", None, json=body)

    async def complete_upload(
        self, object_id: int, done: UploadComplete, *, holder: str | None = None
    ) -> tuple[Committed, Lease | None]:
        """The committed write, and a lease on its record when `holder` asks for one."""
        params = {"holder": holder} if holder else None
        path = f"/uploads/{object_id}/complete"
        content, lease = await self._exchange("POST", path, json=done, params=params)
        return Committed.model_validate_json(content), lease

    async def abort_upload(self, object_id: int) -> list[Garbage]:
        return await self._call("POST", f"/uploads/{object_id}/abort", list[Garbage])

    async def start_replica(self, object_id: int, region: str) -> Locator:
        body = {"region": region}
        return await self._call("POST", f"/uploads/{object_id}/replicas", Locator, json=body)

    async def complete_replica(self, locator_id: int) -> Locator:
        return await self._call("POST", f"/replicas/{locator_id}/complete", Locator)

    async def abort_replica(self, locator_id: int) -> list[Garbage]:
        return await self._call("POST", f"/replicas/{locator_id}/abort", list[Garbage])

    async def replica_read(self, locator_id: int) -> None:
        await self._call("POST", f"/replicas/{locator_id}/read", None)

    async def garbage_removed(self, locator_ids: list[int]) -> None:
        if locator_ids:
            await self._call("POST", "/garbage/removed", None, json={"locator_ids": locator_ids})


def _path(key: str) -> str:
    # Keys are opaque: every reserved character is escaped, '/' included, and dot segments
    # (which URL normalisation would fold away) are escaped as well.
    escaped = quote(key, safe="")
    return escaped.replace(".", "%2E") if set(key) <= {".", "/"} else escaped
