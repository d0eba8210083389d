"""PUTs of 1 MiB and more written through the SeaweedFS filer (proxy/seaweed_writes.py): the
bytes and ETag as the region's own S3 API shows them; a wrong digest or a client gone mid-body
stores nothing; a filer that does not answer leaves the write to the S3 API."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError

from servicekit.infra import wait_until
from servicekit.testing.metrics import scraped

MiB = 1024 * 1024


def _puts(proxy_url: str) -> Counter[str]:
    return scraped(proxy_url, "skystore_bodies_total", by="path", op="put")


def _bucket_with(stack, body: bytes) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    bucket = f"filer-{uuid.uuid4().hex[:8]}"
    s3 = stack.client()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=body)
    return bucket, "k"


def _physical_keys(stack, physical: Callable[[str], Any], bucket: str) -> list[str]:  # type: ignore[no-untyped-def]
    """The keys in the edge region's physical bucket of logical `bucket`."""
    record = stack.locator_call("GET", f"/buckets/{bucket}")
    name = next(p["name"] for p in record["physical"] if p["region"] == "local:edge")
    listed = physical("local:edge").list_objects_v2(Bucket=name)
    return [o["Key"] for o in listed.get("Contents", [])]


def test_a_large_put_goes_through_the_filer_and_reads_back_whole(seaweed_stack, physical) -> None:  # type: ignore[no-untyped-def]
    stack, _ = seaweed_stack
    body = os.urandom(9 * MiB + 7)  # three of the filer's 4 MiB chunks, the last short
    bucket, key = _bucket_with(stack, b"old")
    s3 = stack.client()
    before = _puts(stack.proxies["local:edge"].url)
    put = s3.put_object(Bucket=bucket, Key=key, Body=body)  # payload signed: SHA-256 checked
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    after = _puts(stack.proxies["local:edge"].url)
    assert after["native"] - before["native"] == 1
    assert after["relay"] == before["relay"]
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    ranged = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={4 * MiB - 3}-{4 * MiB + 2}")
    assert ranged["Body"].read() == body[4 * MiB - 3 : 4 * MiB + 3]
    # The region's own S3 API serves the physical object the filer stored, with the same MD5.
    record = stack.locator_call("GET", f"/buckets/{bucket}/objects/{key}")
    (copy,) = record["locators"]
    stored = physical("local:edge").get_object(
        Bucket=copy["physical_bucket"], Key=copy["physical_key"]
    )
    assert stored["ETag"] == put["ETag"]
    assert stored["Body"].read() == body
    # The cloud proxy reads it remotely (write_local), whole.
    assert stack.client("local:cloud").get_object(Bucket=bucket, Key=key)["Body"].read() == body
    # The old version's physical object is removed.
    assert wait_until(lambda: len(_physical_keys(stack, physical, bucket)) == 1, timeout=20)


def test_a_put_with_a_wrong_digest_through_the_filer_stores_nothing(
    seaweed_stack, physical
) -> None:  # type: ignore[no-untyped-def]
    stack, _ = seaweed_stack
    bucket, key = _bucket_with(stack, b"the old version")
    s3 = stack.client(retries={"total_max_attempts": 1})  # botocore retries a BadDigest
    before = _puts(stack.proxies["local:edge"].url)
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket=bucket, Key=key, Body=os.urandom(3 * MiB), ContentMD5=wrong)
    assert caught.value.response["Error"]["Code"] == "BadDigest"
    assert _puts(stack.proxies["local:edge"].url)["native"] - before["native"] == 1
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"the old version"
    # What the filer stored is rolled back: only the old version's physical object is left.
    assert wait_until(lambda: len(_physical_keys(stack, physical, bucket)) == 1, timeout=20)


def test_a_client_gone_mid_put_through_the_filer_leaves_nothing(seaweed_stack, physical) -> None:  # type: ignore[no-untyped-def]
    stack, _ = seaweed_stack
    bucket, key = _bucket_with(stack, b"kept")
    url = stack.client().generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=600
    )
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        head = f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        sock.sendall(f"{head}Content-Length: {8 * MiB}\r\n\r\n".encode())
        sock.sendall(os.urandom(5 * MiB))  # past the filer's first 4 MiB chunk
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s3 = stack.client()
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"kept"
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 1
    assert wait_until(lambda: len(_physical_keys(stack, physical, bucket)) == 1, timeout=20)
    body = os.urandom(2 * MiB)
    s3.put_object(Bucket=bucket, Key=key, Body=body)  # the proxy goes on serving
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body


def test_a_filer_that_does_not_answer_leaves_the_write_to_the_s3_api(seaweed_stack) -> None:  # type: ignore[no-untyped-def]
    stack, blind = seaweed_stack
    bucket = f"filer-{uuid.uuid4().hex[:8]}"
    s3 = stack.client(url=blind.url)
    s3.create_bucket(Bucket=bucket)
    body = os.urandom(2 * MiB + 1)
    before = _puts(blind.url)
    put = s3.put_object(Bucket=bucket, Key="k", Body=body)
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    after = _puts(blind.url)
    assert after["relay"] - before["relay"] == 1
    assert after["native"] == 0
    assert stack.client().get_object(Bucket=bucket, Key="k")["Body"].read() == body
