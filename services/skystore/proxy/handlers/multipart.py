"""Multipart uploads: Create, UploadPart(Copy), Complete, Abort, ListParts, ListMultipartUploads.

The parts go straight into a multipart upload of the region's own store, under the pending
version's physical key; the version is committed only when Complete succeeds.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from typing import IO, Any

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import Request, Response

from servicekit.errors import InvalidInput, NotFound
from servicekit.s3 import translate_s3_error
from services.skystore.proxy.auth import Caller
from services.skystore.proxy.body import Payload
from services.skystore.proxy.conditions import parse_range
from services.skystore.proxy.context import Proxy
from services.skystore.proxy.handlers.objects import (
    copy_source,
    new_upload,
    replicate,
    roll_back,
    write_regions,
)
from services.skystore.proxy.s3api import S3Request
from services.skystore.proxy.xml import iso, parse_complete_multipart, xml_response
from services.skystore.schemas import Locator, ObjectInfo, UploadComplete

__all__ = [
    "abort_multipart_upload",
    "complete_multipart_upload",
    "create_multipart_upload",
    "list_multipart_uploads",
    "list_parts",
    "upload_part",
    "upload_part_copy",
]

SPOOL_IN_MEMORY = 16 * 1024 * 1024
MAX_PART = 5 * 1024 * 1024 * 1024


def _s3_error(exc: BotoCoreError | ClientError, copy: Locator) -> Exception:
    error = translate_s3_error(exc, bucket=copy.physical_bucket, key=copy.physical_key)
    error.detail = {k: v for k, v in error.detail.items() if k not in ("bucket", "key")}
    return error


async def create_multipart_upload(
    proxy: Proxy, s3: S3Request, caller: Caller, request: Request
) -> Response:
    bucket = await proxy.bucket(s3.bucket, caller, write=True)
    regions = write_regions(proxy, bucket)
    started = await proxy.locator.start_upload(new_upload(s3, caller, regions, multipart=True))
    primary = next(c for c in started.locators if c.region == regions[0])
    try:
        created = await proxy.regions.client(primary.region).create_multipart_upload(
            Bucket=primary.physical_bucket, Key=primary.physical_key
        )
        await proxy.locator.set_physical_upload(started.id, primary.region, created["UploadId"])
    except (BotoCoreError, ClientError) as exc:
        await roll_back(proxy, started.id)
        raise _s3_error(exc, primary) from exc
    return xml_response(
        "InitiateMultipartUploadResult",
        [("Bucket", s3.bucket), ("Key", s3.key), ("UploadId", started.upload_id)],
    )


async def _upload(proxy: Proxy, s3: S3Request, caller: Caller) -> tuple[ObjectInfo, Locator]:
    await proxy.bucket(s3.bucket, caller, write=True)
    upload = await proxy.locator.upload(s3.bucket, s3.query["uploadId"])
    primary = next((c for c in upload.locators if c.physical_upload_id), None)
    if upload.key != s3.key or primary is None:
        raise NotFound(
            "The specified upload does not exist.",
            code="NoSuchUpload",
            detail={"UploadId": s3.query["uploadId"]},
        )
    return upload, primary


def _part_number(s3: S3Request) -> int:
    value = s3.query.get("partNumber", "")
    if not value.isdigit() or not 1 <= int(value) <= 10_000:
        raise InvalidInput(
            "Part number must be an integer between 1 and 10000, inclusive",
            detail={"ArgumentName": "partNumber", "ArgumentValue": value},
        )
    return int(value)


async def _spool(chunks: AsyncIterator[bytes]) -> tuple[IO[bytes], int]:
    """A part held on disk past SPOOL_IN_MEMORY bytes: the region's client needs its length."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 - returned
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > MAX_PART:
            spool.close()
            raise InvalidInput("a part may hold at most 5 GiB", code="EntityTooLarge")
        spool.write(chunk)
    spool.seek(0)
    return spool, size


async def _send_part(
    proxy: Proxy, primary: Locator, number: int, body: IO[bytes], size: int
) -> str:
    try:
        response = await proxy.regions.client(primary.region).upload_part(
            Bucket=primary.physical_bucket,
            Key=primary.physical_key,
            UploadId=primary.physical_upload_id,
            PartNumber=number,
            Body=body,
            ContentLength=size,
        )
    except (BotoCoreError, ClientError) as exc:
        raise _s3_error(exc, primary) from exc
    return str(response["ETag"])


async def upload_part(proxy: Proxy, s3: S3Request, caller: Caller, request: Request) -> Response:
    number = _part_number(s3)
    _, primary = await _upload(proxy, s3, caller)
    payload = Payload(request.stream(), s3, caller.signed, caller.signing_key)
    spool, size = await _spool(payload.chunks())
    with spool:
        payload.check()
        etag = await _send_part(proxy, primary, number, spool, size)
    return Response(status_code=200, headers={"ETag": etag, **payload.checksum_headers()})


async def upload_part_copy(
    proxy: Proxy, s3: S3Request, caller: Caller, request: Request
) -> Response:
    number = _part_number(s3)
    _, primary = await _upload(proxy, s3, caller)
    source_bucket, source_key = copy_source(s3)
    await proxy.bucket(source_bucket, caller, write=False)
    source = await proxy.object(source_bucket, source_key, cached=False)
    wanted = s3.headers.get("x-amz-copy-source-range")
    chosen = parse_range(wanted, source.size or 0) if wanted else None
    range_header = f"bytes={chosen[0]}-{chosen[1]}" if chosen else None
    _, chunks = await proxy.open_copy(proxy.read_copy(source), range_header=range_header)
    spool, size = await _spool(chunks)
    with spool:
        etag = await _send_part(proxy, primary, number, spool, size)
    return xml_response(
        "CopyPartResult", [("LastModified", iso(source.last_modified)), ("ETag", etag)]
    )


async def complete_multipart_upload(
    proxy: Proxy, s3: S3Request, caller: Caller, request: Request
) -> Response:
    upload, primary = await _upload(proxy, s3, caller)
    parts = parse_complete_multipart(await request.body())
    if [n for n, _ in parts] != sorted({n for n, _ in parts}):
        raise InvalidInput("The list of parts was not in ascending order.", code="InvalidPartOrder")
    client = proxy.regions.client(primary.region)
    try:
        completed = await client.complete_multipart_upload(
            Bucket=primary.physical_bucket,
            Key=primary.physical_key,
            UploadId=primary.physical_upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]},
        )
        head = await client.head_object(Bucket=primary.physical_bucket, Key=primary.physical_key)
    except (BotoCoreError, ClientError) as exc:
        raise _s3_error(exc, primary) from exc
    regions = [c.region for c in upload.locators]
    others = [c for c in upload.locators if c.region != primary.region]
    written = primary.model_copy(update={"physical_upload_id": None})
    for other in others:
        await replicate(proxy, written, other)
    etag = str(completed["ETag"]).strip('"')
    done = UploadComplete(size=int(head["ContentLength"]), etag=etag, regions=regions)
    info = await proxy.commit(upload.id, done)
    return xml_response(
        "CompleteMultipartUploadResult",
        [
            ("Location", f"/{s3.bucket}/{s3.key}"),
            ("Bucket", s3.bucket),
            ("Key", s3.key),
            ("ETag", f'"{info.etag}"'),
        ],
    )


async def abort_multipart_upload(
    proxy: Proxy, s3: S3Request, caller: Caller, request: Request
) -> Response:
    upload, _ = await _upload(proxy, s3, caller)
    await proxy.remove(await proxy.locator.abort_upload(upload.id))
    return Response(status_code=204)


async def list_parts(proxy: Proxy, s3: S3Request, caller: Caller, request: Request) -> Response:
    _, primary = await _upload(proxy, s3, caller)
    extra: dict[str, Any] = {}
    if (marker := s3.query.get("part-number-marker", "")).isdigit():
        extra["PartNumberMarker"] = int(marker)
    if (most := s3.query.get("max-parts", "")).isdigit():
        extra["MaxParts"] = int(most)
    try:
        listed = await proxy.regions.client(primary.region).list_parts(
            Bucket=primary.physical_bucket,
            Key=primary.physical_key,
            UploadId=primary.physical_upload_id,
            **extra,
        )
    except (BotoCoreError, ClientError) as exc:
        raise _s3_error(exc, primary) from exc
    nodes: list[Any] = [
        ("Bucket", s3.bucket),
        ("Key", s3.key),
        ("UploadId", s3.query["uploadId"]),
        ("PartNumberMarker", listed.get("PartNumberMarker", 0)),
        ("NextPartNumberMarker", listed.get("NextPartNumberMarker", 0)),
        ("MaxParts", listed.get("MaxParts", 1000)),
        ("IsTruncated", bool(listed.get("IsTruncated"))),
    ]
    nodes += [
        (
            "Part",
            [
                ("PartNumber", p["PartNumber"]),
                ("LastModified", iso(p["LastModified"])),
                ("ETag", p["ETag"]),
                ("Size", p["Size"]),
            ],
        )
        for p in listed.get("Parts", [])
    ]
    return xml_response("ListPartsResult", nodes)


async def list_multipart_uploads(
    proxy: Proxy, s3: S3Request, caller: Caller, request: Request
) -> Response:
    await proxy.bucket(s3.bucket, caller, write=False)
    prefix = s3.query.get("prefix", "")
    uploads = await proxy.locator.uploads(s3.bucket, prefix)
    nodes: list[Any] = [
        ("Bucket", s3.bucket),
        ("KeyMarker", ""),
        ("UploadIdMarker", ""),
        ("Prefix", prefix),
        ("MaxUploads", 1000),
        ("IsTruncated", False),
    ]
    nodes += [
        (
            "Upload",
            [
                ("Key", u.key),
                ("UploadId", u.upload_id),
                ("Initiator", [("ID", u.owner), ("DisplayName", u.owner)]),
                ("Owner", [("ID", u.owner), ("DisplayName", u.owner)]),
                ("StorageClass", "STANDARD"),
                ("Initiated", iso(u.started)),
            ],
        )
        for u in uploads
    ]
    return xml_response("ListMultipartUploadsResult", nodes)
