"""Async S3 access for services: clients, presigned URLs, streaming hashes and streaming uploads.

Every botocore exception is translated here (`translate_s3_error`), so code above sees only
`servicekit.errors` types.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

from aiobotocore.client import AioBaseClient
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    ParamValidationError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from servicekit.errors import (
    Conflict,
    ExtractError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    ServiceUnavailable,
    UpstreamError,
)
from servicekit.hashing import HashingReader, check_value_name, parse_check_value
from servicekit.infra.seaweed import S3Endpoint

log = logging.getLogger(__name__)

MiB = 1024 * 1024
# SeaweedFS (like MinIO) ignores the region, but SigV4 needs a valid one to sign with.
DEFAULT_REGION_NAME = "us-east-1"
MAX_PRESIGN_TTL = 7 * 24 * 3600  # the SigV4 limit
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
MAX_PARTS = 10_000
# A check value is one line; anything larger is not one, and is not worth reading.
MAX_CHECK_VALUE_BYTES = 4096

S3ReadinessCheck = Callable[[], Awaitable[None]]


def s3_config(
    *, connect_timeout: float = 5.0, read_timeout: float = 60.0, max_attempts: int = 3
) -> AioConfig:
    """The client configuration every service uses against S3-compatible servers."""
    return AioConfig(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "max_attempts": max_attempts},
        # Flexible checksums (botocore >= 1.36 default) are not understood by every
        # S3-compatible server nor by our SkyStore proxy; send them only where the API
        # demands them. Integrity is checked end to end with check values instead.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


@functools.cache
def _session() -> AioSession:
    # One per process: sessions cache the parsed service model, clients are cheap after that.
    return AioSession()


class S3Client:
    """`async with S3Client(endpoint) as client:` gives an aiobotocore S3 client for one region."""

    def __init__(
        self,
        endpoint: S3Endpoint,
        *,
        config: AioConfig | None = None,
        region_name: str = DEFAULT_REGION_NAME,
    ) -> None:
        self.endpoint = endpoint
        self._config = config or s3_config()
        self._region_name = region_name
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> AioBaseClient:
        context = _session().create_client(
            "s3",
            endpoint_url=self.endpoint.url,
            aws_access_key_id=self.endpoint.access_key,
            aws_secret_access_key=self.endpoint.secret_key,
            region_name=self._region_name,
            config=self._config,
        )
        return await self._stack.enter_async_context(context)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._stack.__aexit__(exc_type, exc, traceback)


def s3_client(endpoint: S3Endpoint, *, config: AioConfig | None = None) -> S3Client:
    """The factory services inject, so a test can hand in another endpoint or configuration."""
    return S3Client(endpoint, config=config)


def _uri(bucket: str, key: str | None) -> str:
    return f"s3://{bucket}/{key}" if key is not None else f"s3://{bucket}"


def translate_s3_error(
    exc: BotoCoreError | ClientError,
    *,
    bucket: str,
    key: str | None = None,
    endpoint: str | None = None,
) -> ExtractError:
    """The servicekit error for a botocore exception raised while working on bucket/key."""
    where = _uri(bucket, key)
    detail: dict[str, Any] = {"bucket": bucket, "key": key}
    if isinstance(exc, ClientError):
        return _translate_client_error(exc, where, detail, endpoint)
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        endpoint = endpoint or exc.kwargs.get("endpoint_url") or "?"
        return ServiceUnavailable(
            f"S3 at {endpoint} is unreachable: {exc}",
            detail={**detail, "endpoint": endpoint},
        )
    if isinstance(exc, ParamValidationError):
        return InvalidInput(f"invalid S3 request for {where}: {exc}", detail=detail)
    return UpstreamError(f"S3 request for {where} failed: {exc}", detail=detail)


def _translate_client_error(
    exc: ClientError, where: str, detail: dict[str, Any], endpoint: str | None
) -> ExtractError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    message = error.get("Message") or code
    detail = {**detail, "s3_code": code, "s3_status": status}
    if code == "NoSuchBucket":
        return NotFound(f"bucket {detail['bucket']!r} does not exist", code=code, detail=detail)
    if code == "NoSuchUpload":
        return NotFound(f"no such multipart upload for {where}", code=code, detail=detail)
    if status == 404:
        # HEAD answers a bare 404 without a code: bucket and key cannot be told apart there.
        return NotFound(f"{where} does not exist", code="NoSuchKey", detail=detail)
    text = f"S3 {code or status} on {where}: {message}"
    if status in (401, 403):
        # Our credentials were refused: a misconfigured dependency, not the caller's fault.
        return UpstreamError(f"S3 at {endpoint or '?'} refused access: {text}", detail=detail)
    if status == 409:
        return Conflict(text, code=code, detail=detail)
    if status == 412:
        return PreconditionFailed(text, code=code, detail=detail)
    if status == 413 or code == "EntityTooLarge":
        return PayloadTooLarge(text, code=code, detail=detail)
    if status in (429, 503) or code == "SlowDown":
        return ServiceUnavailable(text, code=code or None, detail=detail)
    if 400 <= status < 500:
        return InvalidInput(text, code=code, detail=detail)
    return UpstreamError(text, detail=detail)


@asynccontextmanager
async def _s3_errors(
    client: AioBaseClient, bucket: str, key: str | None = None
) -> AsyncIterator[None]:
    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise translate_s3_error(
            exc, bucket=bucket, key=key, endpoint=client.meta.endpoint_url
        ) from exc


def _etag(value: str) -> str:
    return value.strip('"')


def _check_ttl(ttl: int) -> None:
    if not 1 <= ttl <= MAX_PRESIGN_TTL:
        raise InvalidInput(
            f"presigned URL ttl must be between 1 and {MAX_PRESIGN_TTL} seconds (7 days),"
            f" got {ttl}",
            detail={"ttl": ttl},
        )


def _attachment(filename: str) -> str:
    # RFC 6266: an ASCII fallback for old clients, the exact name in filename*; control
    # characters and quotes never reach the header.
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


async def presign_get(
    client: AioBaseClient, bucket: str, key: str, *, ttl: int, filename: str | None = None
) -> str:
    """A URL anyone may GET the object with for `ttl` seconds (as a download named `filename`)."""
    _check_ttl(ttl)
    params: dict[str, str] = {"Bucket": bucket, "Key": key}
    if filename is not None:
        params["ResponseContentDisposition"] = _attachment(filename)
    async with _s3_errors(client, bucket, key):
        return await client.generate_presigned_url("get_object", Params=params, ExpiresIn=ttl)


async def presign_put(
    client: AioBaseClient, bucket: str, key: str, *, ttl: int, content_type: str | None = None
) -> str:
    """A URL anyone may PUT the object to for `ttl` seconds (with exactly `content_type`)."""
    _check_ttl(ttl)
    params: dict[str, str] = {"Bucket": bucket, "Key": key}
    if content_type is not None:
        params["ContentType"] = content_type
    async with _s3_errors(client, bucket, key):
        return await client.generate_presigned_url("put_object", Params=params, ExpiresIn=ttl)


@dataclass(frozen=True)
class ObjectDigest:
    """What one streaming read of an object found."""

    size: int
    digests: dict[str, str]
    etag: str  # without the quotes S3 puts around it
    content_type: str | None


async def stream_hash(
    client: AioBaseClient,
    bucket: str,
    key: str,
    algorithms: Sequence[str],
    *,
    chunk_size: int = MiB,
) -> ObjectDigest:
    """Hash an object with each of `algorithms` in one streaming read (memory: ~one chunk)."""
    if chunk_size < 1:
        # A zero-byte read means end of stream: the object would hash as empty.
        raise InvalidInput(f"chunk_size must be at least 1 byte, got {chunk_size}")
    async with _s3_errors(client, bucket, key):
        response = await client.get_object(Bucket=bucket, Key=key)
        async with response["Body"] as body:
            reader = HashingReader(body.iter_chunks(chunk_size), algorithms)
            async for _ in reader:
                pass
    return ObjectDigest(
        size=reader.size,
        digests=reader.digests(),
        etag=_etag(response["ETag"]),
        content_type=response.get("ContentType"),
    )


async def _read_check_value(client: AioBaseClient, bucket: str, key: str, algorithm: str) -> str:
    check_key = check_value_name(key, algorithm)
    check_uri = _uri(bucket, check_key)
    try:
        async with _s3_errors(client, bucket, check_key):
            response = await client.get_object(Bucket=bucket, Key=check_key)
            async with response["Body"] as body:
                if response["ContentLength"] > MAX_CHECK_VALUE_BYTES:
                    raise PreconditionFailed(
                        f"check value {check_uri} is {response['ContentLength']} bytes;"
                        f" a check value file holds one line"
                    )
                raw = await body.read()
    except NotFound as exc:
        if exc.code == "NoSuchBucket":
            raise
        raise NotFound(
            f"{_uri(bucket, key)} has no {algorithm} check value: put its digest in {check_uri}",
            code="NoSuchKey",
            detail={"bucket": bucket, "key": check_key},
        ) from exc
    try:
        # utf-8-sig: files written on Windows may start with a byte-order mark.
        return parse_check_value(raw.decode("utf-8-sig", errors="replace"), algorithm)
    except InvalidInput as exc:
        # The caller sent nothing wrong; the stored check value is unusable.
        raise PreconditionFailed(
            f"check value {check_uri} is malformed: {exc.message}", detail=exc.detail
        ) from exc


async def verify_with_check_value(
    client: AioBaseClient, bucket: str, key: str, algorithm: str
) -> ObjectDigest:
    """Stream-hash `key` and accept it only if it matches its `<key>.<algorithm>asc` file."""
    expected = await _read_check_value(client, bucket, key, algorithm)
    digest = await stream_hash(client, bucket, key, [algorithm])
    actual = digest.digests[algorithm]
    if actual != expected:
        raise PreconditionFailed(
            f"{algorithm} of {_uri(bucket, key)} is {actual}, its check value says {expected}",
            detail={
                "bucket": bucket,
                "key": key,
                "algorithm": algorithm,
                "actual": actual,
                "expected": expected,
            },
        )
    return digest


async def upload_stream(
    client: AioBaseClient,
    bucket: str,
    key: str,
    chunks: AsyncIterable[bytes],
    *,
    part_size: int = 8 * MiB,
    content_type: str | None = None,
) -> str:
    """Store a byte stream as one object and return its ETag; all of it or nothing is visible.

    Holds about one part in memory. A stream that fits one part is a single PUT; a longer one
    is a multipart upload, aborted if the stream or S3 fails.
    """
    if part_size < MIN_PART_SIZE:
        raise InvalidInput(
            f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum), got {part_size}",
            detail={"part_size": part_size},
        )
    extra = {"ContentType": content_type} if content_type else {}
    iterator = aiter(chunks)
    buffer = bytearray()
    async for chunk in iterator:
        buffer += chunk
        if len(buffer) >= part_size:
            break
    else:
        async with _s3_errors(client, bucket, key):
            response = await client.put_object(Bucket=bucket, Key=key, Body=bytes(buffer), **extra)
        return _etag(response["ETag"])
    return await _upload_parts(client, bucket, key, buffer, iterator, part_size, extra)


async def _upload_parts(
    client: AioBaseClient,
    bucket: str,
    key: str,
    buffer: bytearray,
    rest: AsyncIterator[bytes],
    part_size: int,
    extra: dict[str, str],
) -> str:
    async with _s3_errors(client, bucket, key):
        upload = await client.create_multipart_upload(Bucket=bucket, Key=key, **extra)
        upload_id = upload["UploadId"]
        parts: list[dict[str, Any]] = []

        async def send(data: bytes) -> None:
            number = len(parts) + 1
            if number > MAX_PARTS:
                raise PayloadTooLarge(
                    f"{_uri(bucket, key)}: more than {MAX_PARTS} parts of {part_size} bytes;"
                    f" use a larger part_size"
                )
            response = await client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
            )
            parts.append({"PartNumber": number, "ETag": response["ETag"]})

        try:
            while True:
                while len(buffer) >= part_size:
                    await send(bytes(buffer[:part_size]))
                    del buffer[:part_size]
                chunk = await anext(rest, None)
                if chunk is None:
                    break
                buffer += chunk
            if buffer:
                await send(bytes(buffer))
            response = await client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            await _abort(client, bucket, key, upload_id)
            raise
    return _etag(response["ETag"])


async def _abort(client: AioBaseClient, bucket: str, key: str, upload_id: str) -> None:
    try:
        await client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except (BotoCoreError, ClientError) as exc:
        # The original failure is the one to report; the id lets an operator abort by hand.
        log.warning(
            "could not abort multipart upload %s of %s: %s", upload_id, _uri(bucket, key), exc
        )


async def ensure_bucket(client: AioBaseClient, bucket: str) -> None:
    """Create `bucket` unless it exists already."""
    async with _s3_errors(client, bucket):
        try:
            await client.create_bucket(Bucket=bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code == "BucketAlreadyOwnedByYou":
                return
            if code != "BucketAlreadyExists":
                raise
            # Exists, maybe someone else's: only usable if we may reach it.
            await client.head_bucket(Bucket=bucket)


def s3_check(
    endpoint: S3Endpoint, *, bucket: str | None = None, config: AioConfig | None = None
) -> S3ReadinessCheck:
    """A readiness check: raises ServiceUnavailable (or another ExtractError) when S3 is not usable.

    With `bucket`, the check is that this bucket answers (HeadBucket); otherwise that the
    server accepts our credentials (ListBuckets).
    """
    # A readiness probe must answer fast; retrying is the prober's business.
    config = config or s3_config(connect_timeout=2.0, read_timeout=5.0, max_attempts=1)

    async def check() -> None:
        async with S3Client(endpoint, config=config) as client, _s3_errors(client, bucket or ""):
            if bucket is None:
                await client.list_buckets()
            else:
                await client.head_bucket(Bucket=bucket)

    return check
