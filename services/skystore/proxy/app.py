"""The S3 proxy app: every path not taken by the chassis is an S3 request, parsed, signed-checked,
then handed to the handler of its operation."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import Counter

from servicekit.app import create_service_app
from servicekit.errors import InvalidInput
from servicekit.wire_errors import WireFormat
from services.skystore.proxy.auth import Caller, authenticate
from services.skystore.proxy.conditions import NotModified
from services.skystore.proxy.context import Proxy
from services.skystore.proxy.handlers import buckets, listing, multipart, objects, subresources
from services.skystore.proxy.keys import KeyCache
from services.skystore.proxy.lease_listener import LeaseListener
from services.skystore.proxy.locator_client import LocatorClient
from services.skystore.proxy.object_cache import ObjectCache
from services.skystore.proxy.regions import Regions
from services.skystore.proxy.s3api import Op, S3Request, parse_request
from services.skystore.proxy.unread_body import CloseOnUnreadBody
from services.skystore.secrets_files import read_token
from services.skystore.settings import ProxySettings, internal_token_location

__all__ = ["create_app"]

Handler = Callable[[Proxy, S3Request, Caller, Request], Awaitable[Response]]

HANDLERS: dict[Op, Handler] = {
    Op.LIST_BUCKETS: buckets.list_buckets,
    Op.CREATE_BUCKET: buckets.create_bucket,
    Op.DELETE_BUCKET: buckets.delete_bucket,
    Op.HEAD_BUCKET: buckets.head_bucket,
    Op.GET_BUCKET_LOCATION: buckets.get_bucket_location,
    Op.LIST_OBJECTS: listing.list_objects,
    Op.LIST_OBJECTS_V2: listing.list_objects_v2,
    Op.LIST_MULTIPART_UPLOADS: multipart.list_multipart_uploads,
    Op.DELETE_OBJECTS: objects.delete_objects,
    Op.PUT_OBJECT: objects.put_object,
    Op.COPY_OBJECT: objects.copy_object,
    Op.GET_OBJECT: objects.get_object,
    Op.HEAD_OBJECT: objects.head_object,
    Op.DELETE_OBJECT: objects.delete_object,
    Op.CREATE_MULTIPART_UPLOAD: multipart.create_multipart_upload,
    Op.UPLOAD_PART: multipart.upload_part,
    Op.UPLOAD_PART_COPY: multipart.upload_part_copy,
    Op.COMPLETE_MULTIPART_UPLOAD: multipart.complete_multipart_upload,
    Op.ABORT_MULTIPART_UPLOAD: multipart.abort_multipart_upload,
    Op.LIST_PARTS: multipart.list_parts,
    Op.GET_BUCKET_ACL: subresources.get_acl,
    Op.PUT_BUCKET_ACL: subresources.put_acl,
    Op.GET_OBJECT_ACL: subresources.get_acl,
    Op.PUT_OBJECT_ACL: subresources.put_acl,
    Op.GET_BUCKET_VERSIONING: subresources.get_bucket_versioning,
    Op.LIST_OBJECT_VERSIONS: subresources.list_object_versions,
}


def _check_version(parsed: S3Request) -> None:
    # Buckets are unversioned: the one version of an object is `null`, as S3 names it there.
    version = parsed.query.get("versionId")
    if version is not None and version != "null":
        raise InvalidInput(
            "Invalid version id specified",
            detail={"ArgumentName": "versionId", "ArgumentValue": version},
        )


def _now() -> datetime:
    return datetime.now(UTC)


def s3_router() -> APIRouter:
    router = APIRouter()

    @router.api_route(
        "/{path:path}", methods=["GET", "PUT", "POST", "DELETE", "HEAD"], include_in_schema=False
    )
    async def s3(request: Request) -> Response:
        proxy: Proxy = request.app.state.proxy
        parsed = parse_request(request)
        caller = await authenticate(
            parsed,
            request.app.state.keys,
            now=proxy.clock(),
            max_skew=timedelta(seconds=proxy.settings.clock_skew_seconds),
        )
        _check_version(parsed)
        try:
            return await HANDLERS[parsed.op](proxy, parsed, caller, request)
        except NotModified as exc:
            return Response(status_code=304, headers=exc.headers)

    return router


def create_app(settings: ProxySettings, *, clock: Callable[[], datetime] = _now) -> FastAPI:
    """The S3 proxy of `settings.region`; the locator must answer when it starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        token = await asyncio.to_thread(
            read_token, internal_token_location(settings.internal_token)
        )
        locator = LocatorClient(settings.locator_url, token)
        try:
            async with Regions(
                locator, settings.region, settings.seaweedfs, timeout=settings.relay_timeout
            ) as regions:
                app.state.keys = KeyCache(locator, ttl=settings.key_cache_seconds)
                bytes_read = Counter(
                    "skystore_bytes_read",
                    "Object bytes served, by source region and serving region",
                    ["source", "served"],
                    registry=app.state.metrics.registry,
                )
                records_served = Counter(
                    "skystore_object_records",
                    "Object records used by HEAD, GET and friends, by source (cache, locator)",
                    ["source"],
                    registry=app.state.metrics.registry,
                )
                bodies = Counter(
                    "skystore_bodies",
                    "Object bodies of GET and PUT, by path: buffered (small GETs), stream "
                    "(through the ASGI stack), relay (socket to socket, past it), native "
                    "(relayed from SeaweedFS volume servers) or native_buffered (small GETs "
                    "read whole from them)",
                    ["op", "path"],
                    registry=app.state.metrics.registry,
                )
                cache = ObjectCache(uuid.uuid4().hex, settings.object_cache_entries)
                listener = LeaseListener(settings.nats_url, cache)
                if settings.nats_url and settings.object_cache_entries > 0:
                    listener.start()
                    locator.look_up_over_nats(lambda: listener.client)
                app.state.proxy = Proxy(
                    settings,
                    locator,
                    regions,
                    clock,
                    bytes_read,
                    cache,
                    records_served,
                    bodies,
                )
                try:
                    yield
                finally:
                    await listener.stop()
        finally:
            await locator.aclose()

    app = create_service_app(
        name=f"skystore-proxy {settings.region}",
        settings=settings,
        routers=[s3_router()],
        wire_format=WireFormat.S3,
        lifespan=lifespan,
    )
    app.add_middleware(CloseOnUnreadBody)
    return app
