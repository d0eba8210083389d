"""PutObject, GetObject, HeadObject, DeleteObject, DeleteObjects, CopyObject."""

from __future__ import annotations

import asyncio
import logging
import os
from urllib.parse import unquote

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import Request, Response
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from servicekit.errors import (
    BadRequest,
    ExtractError,
    InvalidInput,
    NotFound,
    ServiceUnavailable,
)
from servicekit.s3 import translate_s3_error
from servicekit.socket_relay import ClientConnection, RelayedResponse, RelayError, SocketBody
from services.skystore.policies import policy
from services.skystore.proxy.auth import Caller
from services.skystore.proxy.body import Payload
from services.skystore.proxy.checksums import response_header
from services.skystore.proxy.conditions import check_preconditions, http_date, parse_range
from services.skystore.proxy.context import Proxy
from services.skystore.proxy.s3api import S3Request
from services.skystore.proxy.seaweed_reads import NotReadable
from services.skystore.proxy.seaweed_writes import NotWritable
from services.skystore.proxy.upload import write_stream
from services.skystore.proxy.xml import iso, parse_delete, xml_response
from services.skystore.schemas import Bucket, Locator, ObjectInfo, UploadComplete, UploadStart

__all__ = [
    "copy_object",
    "delete_object",
    "delete_objects",
    "get_object",
    "head_object",
    "put_object",
    "user_metadata",
]

log = logging.getLogger(__name__)

META = "x-amz-meta-"
BUFFERED_GET = 256 * 1024  # bodies up to this size are read whole, then sent


def user_metadata(s3: S3Request) -> dict[str, str]:
    """x-amz-meta-* headers, names lower-cased, empty values kept."""
    # ASGI header names are lower-case already.
    return {name[len(META) :]: value for name, value in s3.raw_headers if name.startswith(META)}


def object_headers(info: ObjectInfo, s3: S3Request, *, whole: bool) -> dict[str, str]:
    """The headers describing `info`; its checksum when asked for (x-amz-checksum-mode) and the
    answer carries the `whole` object."""
    headers = {
        "ETag": f'"{info.etag}"',
        "Last-Modified": http_date(info.last_modified or info.started),
        "Content-Type": info.content_type,
        "Accept-Ranges": "bytes",
    }
    headers.update({f"{META}{k}": v for k, v in info.metadata.items()})
    if whole and s3.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
        headers.update(response_header(info.checksum))
    return headers


async def roll_back(proxy: Proxy, object_id: int) -> None:
    # Shielded: a cancelled request (client gone) must still roll its upload back.
    async def roll_back() -> None:
        try:
            garbage = await proxy.locator.abort_upload(object_id)
        except ExtractError:
            return  # already rolled back, or the locator is down: its reaper finishes the job
        await proxy.remove(garbage)

    await asyncio.shield(roll_back())


async def _store(
    proxy: Proxy, started: ObjectInfo, payload: Payload, regions: list[str], request: Request
) -> tuple[str, dict[str, str]]:
    """Write the body to the first region, then copy it to the others (synchronous replicas);
    (the object's ETag, the first copy's layout by region if it has one to record).

    A body of known length goes through in one streamed PUT, whose ETag (the MD5 of the bytes)
    the region computes (a large one read straight off the client's socket when it can be);
    others go as a multipart upload, and the proxy computes the MD5."""
    copies = {c.region: c for c in started.locators}
    primary = copies[regions[0]]
    client = ClientConnection.in_scope(request.scope)
    length = payload.declared if payload.in_one_request else None
    if length is not None and client and payload.plain and proxy.relays(primary, length):
        etag = await _store_from_socket(proxy, primary, payload, length, client, request)
    elif length is not None:
        proxy.bodies.labels(op="put", path="stream").inc()
        etag = await proxy.regions.http(primary.region).put(
            primary.physical_bucket, primary.physical_key, payload.chunks(), length=length
        )
    else:
        await write_stream(
            proxy.regions.client(primary.region),
            primary.physical_bucket,
            primary.physical_key,
            payload.chunks(),
        )
        etag = payload.md5_hex
    layouts = await _layouts(proxy, primary, length)
    for region in regions[1:]:
        await replicate(proxy, primary, copies[region])
    return etag, layouts


async def _layouts(proxy: Proxy, copy: Locator, length: int | None) -> dict[str, str]:
    """{region: layout} of a copy just written to a SeaweedFS region this proxy reads past the
    S3 API (seaweed_reads.layout_of), so no proxy's first read of it asks the filer."""
    reader = proxy.regions.seaweed(copy.region)
    if reader is None or not length:
        return {}
    layout = await reader.layout(copy.physical_bucket, copy.physical_key, length)
    return {copy.region: layout} if layout else {}


async def _store_from_socket(
    proxy: Proxy,
    primary: Locator,
    payload: Payload,
    length: int,
    client: ClientConnection,
    request: Request,
) -> str:
    try:
        first, source = await client.take_request_body(request.receive)
    except RelayError as exc:
        raise BadRequest(str(exc), code="IncompleteBody") from exc
    try:
        # Through the filer where the proxy may reach it (seaweed_writes.py), else the S3 API.
        writer = proxy.regions.seaweed_writer(primary.region)
        filer = None
        if writer is not None:
            try:
                filer = await writer.connect()
            except NotWritable as exc:
                log.warning("writing through the S3 API: %s", exc)
        proxy.bodies.labels(op="put", path="relay" if filer is None else "native").inc()
        timeout = proxy.settings.relay_timeout
        if writer is not None and filer is not None:
            return await writer.put_from_socket(
                filer,
                primary.physical_bucket,
                primary.physical_key,
                (first, source, length),
                payload.digest,
                stall_timeout=timeout,
            )
        return await proxy.regions.http(primary.region).put_from_socket(
            primary.physical_bucket,
            primary.physical_key,
            (first, source, length),
            payload.digest,
            stall_timeout=timeout,
        )
    finally:
        if source is not None:
            os.close(source)


async def replicate(proxy: Proxy, source: Locator, target: Locator) -> None:
    """Stream one physical copy into another region (same region: a server-side copy)."""
    client = proxy.regions.client(target.region)
    if source.region == target.region:
        try:
            await client.copy_object(
                Bucket=target.physical_bucket,
                Key=target.physical_key,
                CopySource={"Bucket": source.physical_bucket, "Key": source.physical_key},
            )
        except (BotoCoreError, ClientError) as exc:
            raise translate_s3_error(
                exc, bucket=target.physical_bucket, key=target.physical_key
            ) from exc
        return
    _, chunks = await proxy.open_copy(source)
    await write_stream(client, target.physical_bucket, target.physical_key, chunks)


def write_regions(proxy: Proxy, bucket: Bucket) -> list[str]:
    return policy(bucket.policy).write_regions(bucket, proxy.region)


def new_upload(s3: S3Request, caller: Caller, regions: list[str], **fields: object) -> UploadStart:
    """The start of an upload of `s3`'s key by `caller` to `regions` (the first is the base),
    with the request's content type and user metadata unless `fields` say otherwise."""
    described = {
        "content_type": s3.headers.get("content-type") or "binary/octet-stream",
        "metadata": user_metadata(s3),
        **fields,
    }
    return UploadStart(
        bucket=s3.bucket,
        key=s3.key,
        owner=caller.principal,
        regions=regions,
        base_region=regions[0],
        **described,
    )


async def put_object(proxy: Proxy, s3: S3Request, caller: Caller, request: Request) -> Response:
    bucket = await proxy.bucket(s3.bucket, caller, write=True)
    regions = write_regions(proxy, bucket)
    payload = Payload(request.stream(), s3, caller.signed, caller.signing_key)
    started = await proxy.locator.start_upload(new_upload(s3, caller, regions))
    try:
        etag, layouts = await _store(proxy, started, payload, regions, request)
        payload.check()
    except BaseException:
        await roll_back(proxy, started.id)
        raise
    done = UploadComplete(
        size=payload.size,
        etag=etag,
        regions=regions,
        checksum=payload.stored_checksum(),
        layouts=layouts,
    )
    info = await proxy.commit(started.id, done)
    return Response(
        status_code=200, headers={"ETag": f'"{info.etag}"', **payload.checksum_headers()}
    )


async def readable(proxy: Proxy, s3: S3Request, caller: Caller) -> ObjectInfo:
    await proxy.bucket(s3.bucket, caller, write=False)
    return await proxy.object(s3.bucket, s3.key)


async def head_object(proxy: Proxy, s3: S3Request, caller: Caller, request: Request) -> Response:
    info = await readable(proxy, s3, caller)
    check_preconditions(s3.headers, info)
    size = info.size or 0
    chosen = parse_range(s3.headers.get("range"), size)
    headers = object_headers(info, s3, whole=chosen is None)
    if chosen is None:
        headers["Content-Length"] = str(size)
        return Response(status_code=200, headers=headers)
    first, last = chosen
    headers["Content-Length"] = str(last - first + 1)
    headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    return Response(status_code=206, headers=headers)


async def get_object(proxy: Proxy, s3: S3Request, caller: Caller, request: Request) -> Response:
    bucket = await proxy.bucket(s3.bucket, caller, write=False)
    info = await proxy.object(s3.bucket, s3.key)
    client = ClientConnection.in_scope(request.scope)
    try:
        return await _send(proxy, s3, bucket, info, client)
    except NotFound:
        # The copy went away between lookup and read (an overwrite won, or the replica read
        # was evicted): read what the locator lists now.
        latest = await proxy.object(s3.bucket, s3.key, cached=False)
        return await _send(proxy, s3, bucket, latest, client)


async def _copy_here(proxy: Proxy, info: ObjectInfo, source: Locator) -> Locator | None:
    """copy_on_read: the whole object into this region, or nothing (then read remotely)."""
    try:
        target = await proxy.locator.start_replica(info.id, proxy.region)
    except ExtractError:
        return None  # another reader is copying it, or the version changed: read remotely
    try:
        await replicate(proxy, source, target)
        copied = await proxy.locator.complete_replica(target.id)
        proxy.cache.forget(info.bucket, info.key)  # the next read looks up the local copy
        return copied if copied.status == "ready" else None  # overwritten while copying
    except ExtractError:
        await proxy.remove(await proxy.locator.abort_replica(target.id))
        return None


async def _send(
    proxy: Proxy, s3: S3Request, bucket: Bucket, info: ObjectInfo, client: ClientConnection | None
) -> Response:
    check_preconditions(s3.headers, info)
    size = info.size or 0
    chosen = parse_range(s3.headers.get("range"), size)
    headers = object_headers(info, s3, whole=chosen is None)
    copy = proxy.read_copy(info)
    if copy.region != proxy.region and policy(bucket.policy).copy_on_read:
        copy = await _copy_here(proxy, info, copy) or copy
    if not copy.is_base:
        proxy.note_read(copy)
    range_header = f"bytes={chosen[0]}-{chosen[1]}" if chosen else None
    status, length = 200, size
    if chosen is not None:
        status, length = 206, chosen[1] - chosen[0] + 1
        headers["Content-Range"] = f"bytes {chosen[0]}-{chosen[1]}/{size}"
    headers["Content-Length"] = str(length)
    span = chosen or (0, size - 1)
    if client is not None and proxy.relays(copy, length):
        return await _relayed(proxy, copy, span, range_header, client, status, headers, info)
    if length <= BUFFERED_GET:
        # Small bodies are read whole and sent at once: a streamed response costs a task
        # group and more writes, milliseconds that a 4 KiB GET cannot afford.
        body = await _read_whole(proxy, copy, span, range_header, info)
        return Response(body, status, headers=headers, media_type=info.content_type)
    _, chunks = await proxy.open_copy(copy, range_header=range_header)
    chunks = proxy.count_read(chunks, copy.region)
    proxy.bodies.labels(op="get", path="stream").inc()
    return StreamingResponse(chunks, status, headers=headers, media_type=info.content_type)


async def _relayed(
    proxy: Proxy,
    copy: Locator,
    span: tuple[int, int],
    range_header: str | None,
    client: ClientConnection,
    status: int,
    headers: dict[str, str],
    info: ObjectInfo,
) -> Response:
    """The bytes `span` (first, last) of the copy, relayed from its region's volume servers
    when this proxy may read them, else from the region's S3 API."""
    source: SocketBody | None = await _from_volumes(proxy, copy, span, info)
    path = "native"
    if source is None:
        path = "relay"
        source = await proxy.regions.http(copy.region).get_socket(
            copy.physical_bucket, copy.physical_key, range_header=range_header
        )
    length = int(headers["Content-Length"])
    if source.length != length:
        source.close(consumed=False)
        raise ServiceUnavailable(
            f"region {copy.region} has {source.length} bytes where the record says {length}",
            detail={"bucket": info.bucket, "key": info.key},
        )
    proxy.bodies.labels(op="get", path=path).inc()
    return RelayedResponse(
        source,
        client,
        status_code=status,
        headers=headers,
        media_type=info.content_type,
        timeout=proxy.settings.relay_timeout,
        background=BackgroundTask(proxy.count_bytes, length, copy.region),
    )


async def _from_volumes(
    proxy: Proxy, copy: Locator, span: tuple[int, int], info: ObjectInfo
) -> SocketBody | None:
    """The copy's bytes from its SeaweedFS volume servers, their first chunk asked for; None
    when the region is not read so here, or this object cannot be (then the S3 API serves)."""
    reader = proxy.regions.seaweed(copy.region)
    if reader is None:
        return None
    try:
        return await reader.relayed(
            copy.physical_bucket, copy.physical_key, *span, info.size or 0, copy.layout
        )
    except NotReadable as exc:
        log.info("reading %s/%s through S3: %s", copy.region, copy.physical_key, exc)
        return None


async def _read_whole(
    proxy: Proxy, copy: Locator, span: tuple[int, int], range_header: str | None, info: ObjectInfo
) -> bytes:
    """The bytes `span` of a small body: from the copy's SeaweedFS volume servers when this
    proxy may read them and the object allows, else from the region's S3 API."""
    reader = proxy.regions.seaweed(copy.region)
    body, path = None, "buffered"
    if reader is not None and span[1] >= span[0]:
        try:
            body = await reader.read(
                copy.physical_bucket, copy.physical_key, *span, info.size or 0, copy.layout
            )
            path = "native_buffered"
        except NotReadable as exc:
            log.info("reading %s/%s through S3: %s", copy.region, copy.physical_key, exc)
    if body is None:
        _, chunks = await proxy.open_copy(copy, range_header=range_header)
        body = b"".join([chunk async for chunk in chunks])
    proxy.count_bytes(len(body), copy.region)
    proxy.bodies.labels(op="get", path=path).inc()
    return body


async def delete_object(proxy: Proxy, s3: S3Request, caller: Caller, request: Request) -> Response:
    await proxy.bucket(s3.bucket, caller, write=True)
    await proxy.remove(await proxy.locator.delete_object(s3.bucket, s3.key))
    return Response(status_code=204)


async def delete_objects(proxy: Proxy, s3: S3Request, caller: Caller, request: Request) -> Response:
    await proxy.bucket(s3.bucket, caller, write=True)
    keys, quiet = parse_delete(await request.body())
    results: list[tuple[str, object]] = []
    for key in keys:
        try:
            await proxy.remove(await proxy.locator.delete_object(s3.bucket, key))
        except ExtractError as exc:
            results.append(("Error", [("Key", key), ("Code", exc.code), ("Message", exc.message)]))
            continue
        if not quiet:
            results.append(("Deleted", [("Key", key)]))
    return xml_response("DeleteResult", results)


def copy_source(s3: S3Request) -> tuple[str, str]:
    source = unquote(s3.headers["x-amz-copy-source"]).partition("?")[0].lstrip("/")
    bucket, _, key = source.partition("/")
    if not bucket or not key:
        raise InvalidInput(
            "x-amz-copy-source must be <bucket>/<key>", detail={"ArgumentName": "x-amz-copy-source"}
        )
    return bucket, key


async def copy_object(proxy: Proxy, s3: S3Request, caller: Caller, request: Request) -> Response:
    source_bucket, source_key = copy_source(s3)
    await proxy.bucket(source_bucket, caller, write=False)
    source = await proxy.object(source_bucket, source_key, cached=False)
    bucket = await proxy.bucket(s3.bucket, caller, write=True)
    replace = s3.headers.get("x-amz-metadata-directive", "COPY").upper() == "REPLACE"
    if source_bucket == s3.bucket and source_key == s3.key and not replace:
        raise InvalidInput(
            "This copy request is illegal because it is trying to copy an object to itself "
            "without changing the object's metadata.",
            code="InvalidRequest",
        )
    regions = write_regions(proxy, bucket)
    described = (
        {"content_type": s3.headers.get("content-type") or source.content_type}
        if replace
        else {"content_type": source.content_type, "metadata": source.metadata}
    )
    started = await proxy.locator.start_upload(new_upload(s3, caller, regions, **described))
    targets = {c.region: c for c in started.locators}
    try:
        for region in regions:
            near = {c.region: c for c in source.locators if c.status == "ready"}
            await replicate(proxy, near.get(region) or proxy.read_copy(source), targets[region])
    except BaseException:
        await roll_back(proxy, started.id)
        raise
    done = UploadComplete(
        size=source.size or 0, etag=source.etag or "", regions=regions, checksum=source.checksum
    )
    info = await proxy.commit(started.id, done)
    return xml_response(
        "CopyObjectResult", [("LastModified", iso(info.last_modified)), ("ETag", f'"{info.etag}"')]
    )
