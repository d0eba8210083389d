"""The S3 client layer against the harness's real SeaweedFS servers."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator

import blake3
import httpx
import pytest
from aiobotocore.client import AioBaseClient

from servicekit.errors import (
    InvalidInput,
    NotFound,
    PreconditionFailed,
    ServiceUnavailable,
    UpstreamError,
)
from servicekit.hashing import HASH_ALGORITHMS
from servicekit.infra import S3Endpoint, free_port
from servicekit.s3 import (
    MAX_PRESIGN_TTL,
    MiB,
    S3Client,
    ensure_bucket,
    presign_get,
    presign_put,
    s3_check,
    s3_client,
    s3_config,
    stream_hash,
    upload_stream,
    verify_with_check_value,
)


def reference_digests(data: bytes) -> dict[str, str]:
    return {
        "sha256": hashlib.sha256(data).hexdigest(),
        "sha512": hashlib.sha512(data).hexdigest(),
        "blake3": blake3.blake3(data).hexdigest(),
    }


async def chunked(data: bytes, size: int = MiB) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.fixture
async def client(s3_endpoint: S3Endpoint) -> AsyncIterator[AioBaseClient]:
    async with s3_client(s3_endpoint) as client:
        yield client


@pytest.fixture
async def bucket(client: AioBaseClient) -> str:
    name = f"s3-test-{uuid.uuid4().hex[:12]}"
    await ensure_bucket(client, name)
    return name


def closed_endpoint() -> S3Endpoint:
    return S3Endpoint("local:gone", f"http://127.0.0.1:{free_port()}", "key", "secret")


async def test_stream_hash_of_a_multipart_upload_matches_the_reference(
    client: AioBaseClient, bucket: str
) -> None:
    data = os.urandom(24 * MiB)
    etag = await upload_stream(client, bucket, "big.bin", chunked(data), part_size=8 * MiB)
    assert etag.endswith("-3")  # three parts of 8 MiB
    digest = await stream_hash(client, bucket, "big.bin", HASH_ALGORITHMS)
    assert digest.size == len(data)
    assert digest.digests == reference_digests(data)
    assert digest.etag == etag


async def test_stream_hash_changes_when_one_byte_flips(client: AioBaseClient, bucket: str) -> None:
    data = os.urandom(3 * MiB)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01
    await client.put_object(Bucket=bucket, Key="a", Body=data)
    await client.put_object(Bucket=bucket, Key="b", Body=bytes(flipped))
    original = await stream_hash(client, bucket, "a", HASH_ALGORITHMS)
    changed = await stream_hash(client, bucket, "b", HASH_ALGORITHMS)
    assert changed.digests == reference_digests(bytes(flipped))
    for algorithm in HASH_ALGORITHMS:
        assert original.digests[algorithm] != changed.digests[algorithm]


async def test_stream_hash_holds_about_one_chunk_in_memory(
    client: AioBaseClient, bucket: str
) -> None:
    await client.put_object(Bucket=bucket, Key="big", Body=os.urandom(16 * MiB))
    tracemalloc.start()
    try:
        digest = await stream_hash(client, bucket, "big", ["sha256"], chunk_size=MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest.size == 16 * MiB
    assert peak < 4 * MiB, f"peak {peak / MiB:.1f} MiB while hashing a 16 MiB object"


async def test_stream_hash_refuses_a_chunk_size_below_one_byte(
    client: AioBaseClient, bucket: str
) -> None:
    await client.put_object(Bucket=bucket, Key="k", Body=b"data")
    with pytest.raises(InvalidInput, match="chunk_size"):
        await stream_hash(client, bucket, "k", ["sha256"], chunk_size=0)


async def test_stream_hash_refuses_an_unknown_algorithm(client: AioBaseClient, bucket: str) -> None:
    await client.put_object(Bucket=bucket, Key="k", Body=b"data")
    with pytest.raises(InvalidInput, match="'md5'"):
        await stream_hash(client, bucket, "k", ["sha256", "md5"])


async def test_stream_hash_reports_content_type(client: AioBaseClient, bucket: str) -> None:
    await client.put_object(
        Bucket=bucket, Key="m.onnx", Body=b"onnx", ContentType="application/octet-stream"
    )
    digest = await stream_hash(client, bucket, "m.onnx", ["sha256"])
    assert digest.content_type == "application/octet-stream"
    assert digest.etag == hashlib.md5(b"onnx").hexdigest()


async def test_stream_hash_of_a_missing_key_is_not_found(
    client: AioBaseClient, bucket: str
) -> None:
    with pytest.raises(NotFound) as missing:
        await stream_hash(client, bucket, "nope/model.onnx", ["sha256"])
    assert missing.value.code == "NoSuchKey"
    assert f"s3://{bucket}/nope/model.onnx" in missing.value.message


async def test_stream_hash_in_a_missing_bucket_is_not_found(client: AioBaseClient) -> None:
    name = f"missing-{uuid.uuid4().hex[:12]}"
    with pytest.raises(NotFound) as missing:
        await stream_hash(client, name, "model.onnx", ["sha256"])
    assert missing.value.code == "NoSuchBucket"
    assert name in missing.value.message


async def test_a_closed_port_is_service_unavailable_naming_the_endpoint() -> None:
    endpoint = closed_endpoint()
    config = s3_config(connect_timeout=1.0, read_timeout=1.0, max_attempts=1)
    async with S3Client(endpoint, config=config) as client:
        with pytest.raises(ServiceUnavailable) as down:
            await stream_hash(client, "b", "k", ["sha256"])
    assert endpoint.url in down.value.message


async def test_refused_credentials_are_an_upstream_error(s3_endpoint: S3Endpoint) -> None:
    wrong = S3Endpoint(s3_endpoint.region, s3_endpoint.url, s3_endpoint.access_key, "wrong")
    async with s3_client(wrong) as client:
        with pytest.raises(UpstreamError, match="refused access"):
            await ensure_bucket(client, f"s3-test-{uuid.uuid4().hex[:12]}")


async def test_small_stream_is_stored_with_a_single_put(client: AioBaseClient, bucket: str) -> None:
    data = os.urandom(MiB + 17)
    etag = await upload_stream(
        client, bucket, "small", chunked(data, 4096), content_type="application/x-test"
    )
    assert etag == hashlib.md5(data).hexdigest()  # a multipart ETag would end in "-<parts>"
    stored = await client.get_object(Bucket=bucket, Key="small")
    async with stored["Body"] as body:
        assert await body.read() == data
    assert stored["ContentType"] == "application/x-test"


async def test_empty_stream_stores_an_empty_object(client: AioBaseClient, bucket: str) -> None:
    await upload_stream(client, bucket, "empty", chunked(b""))
    digest = await stream_hash(client, bucket, "empty", ["sha256"])
    assert digest.size == 0
    assert digest.digests["sha256"] == hashlib.sha256(b"").hexdigest()


async def test_upload_stream_keeps_the_content_type_on_multipart(
    client: AioBaseClient, bucket: str
) -> None:
    data = os.urandom(11 * MiB)
    await upload_stream(
        client,
        bucket,
        "typed",
        chunked(data, 3 * MiB),
        part_size=5 * MiB,
        content_type="application/x-spectra",
    )
    digest = await stream_hash(client, bucket, "typed", ["sha256"])
    assert digest.content_type == "application/x-spectra"
    assert digest.digests["sha256"] == hashlib.sha256(data).hexdigest()


async def test_failed_stream_leaves_no_object_and_no_pending_upload(
    client: AioBaseClient, bucket: str
) -> None:
    parts_sent = 0

    async def failing() -> AsyncIterator[bytes]:
        nonlocal parts_sent
        for _ in range(2):
            yield os.urandom(5 * MiB)
            parts_sent += 1
        raise OSError("sensor feed lost")

    with pytest.raises(OSError, match="sensor feed lost"):
        await upload_stream(client, bucket, "partial", failing(), part_size=5 * MiB)
    assert parts_sent == 2
    with pytest.raises(NotFound):
        await stream_hash(client, bucket, "partial", ["sha256"])
    uploads = await client.list_multipart_uploads(Bucket=bucket)
    assert uploads.get("Uploads", []) == []


async def test_upload_stream_refuses_parts_below_the_s3_minimum(
    client: AioBaseClient, bucket: str
) -> None:
    with pytest.raises(InvalidInput, match="at least 5242880"):
        await upload_stream(client, bucket, "k", chunked(b"x"), part_size=MiB)


@pytest.mark.parametrize("algorithm", HASH_ALGORITHMS)
async def test_verify_accepts_a_matching_check_value(
    client: AioBaseClient, bucket: str, algorithm: str
) -> None:
    data = os.urandom(2 * MiB)
    hex_digest = reference_digests(data)[algorithm]
    await client.put_object(Bucket=bucket, Key="models/model.onnx", Body=data)
    await client.put_object(
        Bucket=bucket,
        Key=f"models/model.onnx.{algorithm}asc",
        Body=f"{hex_digest.upper()} *model.onnx\n".encode(),
    )
    digest = await verify_with_check_value(client, bucket, "models/model.onnx", algorithm)
    assert digest.digests == {algorithm: hex_digest}
    assert digest.size == len(data)


async def test_verify_refuses_a_model_that_does_not_match(
    client: AioBaseClient, bucket: str
) -> None:
    data = os.urandom(MiB)
    expected = hashlib.sha256(data).hexdigest()
    tampered = b"\x00" + data[1:]
    await client.put_object(Bucket=bucket, Key="model.onnx", Body=tampered)
    await client.put_object(
        Bucket=bucket, Key="model.onnx.sha256asc", Body=f"{expected}  model.onnx\n".encode()
    )
    with pytest.raises(PreconditionFailed) as refused:
        await verify_with_check_value(client, bucket, "model.onnx", "sha256")
    actual = hashlib.sha256(tampered).hexdigest()
    assert refused.value.message == (
        f"sha256 of s3://{bucket}/model.onnx is {actual}, its check value says {expected}"
    )


async def test_verify_without_a_check_value_is_not_found(
    client: AioBaseClient, bucket: str
) -> None:
    await client.put_object(Bucket=bucket, Key="model.onnx", Body=b"weights")
    await client.put_object(
        Bucket=bucket,
        Key="model.onnx.sha256asc",
        Body=hashlib.sha256(b"weights").hexdigest().encode(),
    )
    with pytest.raises(NotFound) as missing:
        await verify_with_check_value(client, bucket, "model.onnx", "sha512")
    assert f"s3://{bucket}/model.onnx.sha512asc" in missing.value.message


async def test_verify_refuses_a_malformed_check_value(client: AioBaseClient, bucket: str) -> None:
    await client.put_object(Bucket=bucket, Key="model.onnx", Body=b"weights")
    await client.put_object(Bucket=bucket, Key="model.onnx.sha256asc", Body=b"deadbeef\n")
    with pytest.raises(PreconditionFailed, match=r"malformed: .*expected 64 hex digits, got 8"):
        await verify_with_check_value(client, bucket, "model.onnx", "sha256")


async def test_presigned_put_then_get_round_trip(client: AioBaseClient, bucket: str) -> None:
    data = os.urandom(64 * 1024)
    put_url = await presign_put(client, bucket, "up/obs.csv", ttl=60, content_type="text/csv")
    get_url = await presign_get(client, bucket, "up/obs.csv", ttl=60)
    async with httpx.AsyncClient() as http:
        stored = await http.put(put_url, content=data, headers={"Content-Type": "text/csv"})
        assert stored.status_code == 200, stored.text
        fetched = await http.get(get_url)
    assert fetched.status_code == 200
    assert fetched.content == data
    assert fetched.headers["content-type"] == "text/csv"


async def test_presigned_put_is_bound_to_its_content_type(
    client: AioBaseClient, bucket: str
) -> None:
    put_url = await presign_put(client, bucket, "typed.csv", ttl=60, content_type="text/csv")
    async with httpx.AsyncClient() as http:
        refused = await http.put(put_url, content=b"x", headers={"Content-Type": "text/html"})
    assert refused.status_code == 403


async def test_presigned_get_names_the_download(client: AioBaseClient, bucket: str) -> None:
    await client.put_object(Bucket=bucket, Key="k", Body=b"spectra")
    url = await presign_get(client, bucket, "k", ttl=60, filename='Venice "acqua alta".csv')
    async with httpx.AsyncClient() as http:
        fetched = await http.get(url)
    assert fetched.status_code == 200
    disposition = fetched.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="Venice _acqua alta_.csv"')
    assert "filename*=UTF-8''Venice%20%22acqua%20alta%22.csv" in disposition


async def test_expired_presigned_url_is_refused(client: AioBaseClient, bucket: str) -> None:
    await client.put_object(Bucket=bucket, Key="k", Body=b"short-lived")
    url = await presign_get(client, bucket, "k", ttl=1)
    deadline = time.monotonic() + 15
    async with httpx.AsyncClient() as http:
        while (response := await http.get(url)).status_code != 403:
            assert response.status_code == 200, f"unexpected {response.status_code} before expiry"
            assert time.monotonic() < deadline, "presigned URL still accepted 15 s after expiry"
            await asyncio.sleep(0.2)
    assert "expired" in response.text


@pytest.mark.parametrize("ttl", [0, -5, MAX_PRESIGN_TTL + 1])
async def test_presign_ttl_must_be_one_second_to_seven_days(
    client: AioBaseClient, bucket: str, ttl: int
) -> None:
    with pytest.raises(InvalidInput, match="between 1 and 604800"):
        await presign_get(client, bucket, "k", ttl=ttl)
    with pytest.raises(InvalidInput, match="between 1 and 604800"):
        await presign_put(client, bucket, "k", ttl=ttl)


async def test_ensure_bucket_is_idempotent(client: AioBaseClient) -> None:
    name = f"s3-test-{uuid.uuid4().hex[:12]}"
    await ensure_bucket(client, name)
    await client.put_object(Bucket=name, Key="kept", Body=b"1")
    await ensure_bucket(client, name)
    assert (await client.head_object(Bucket=name, Key="kept"))["ContentLength"] == 1


async def test_s3_check_passes_against_a_live_server(s3_endpoint: S3Endpoint, bucket: str) -> None:
    await s3_check(s3_endpoint)()
    await s3_check(s3_endpoint, bucket=bucket)()


async def test_s3_check_fails_for_a_missing_bucket(s3_endpoint: S3Endpoint) -> None:
    with pytest.raises(NotFound):
        await s3_check(s3_endpoint, bucket=f"missing-{uuid.uuid4().hex[:12]}")()


async def test_s3_check_fails_when_the_server_is_down() -> None:
    endpoint = closed_endpoint()
    with pytest.raises(ServiceUnavailable) as down:
        await s3_check(endpoint)()
    assert endpoint.url in down.value.message


async def test_the_harness_region_takes_many_buckets(client: AioBaseClient) -> None:
    """Each test makes its own buckets; SeaweedFS's default growth of 7 volumes per bucket ran
    the volume slots out after ~45 of them (InternalError on PutObject)."""
    prefix = f"many-{uuid.uuid4().hex[:8]}"
    for number in range(60):
        name = f"{prefix}-{number}"
        await client.create_bucket(Bucket=name)
        await client.put_object(Bucket=name, Key="k", Body=b"x")
