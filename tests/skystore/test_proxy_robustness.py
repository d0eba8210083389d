"""Concurrent writers, a proxy killed mid-upload, signed chunked uploads, unversioned buckets."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from servicekit.infra.ports import free_port
from servicekit.sigv4 import EMPTY_SHA256, STREAMING_SIGNED, Credential, signing_key
from servicekit.testing import ServiceProcess

MiB = 1024 * 1024


def _until(condition: Callable[[], Any], timeout: float, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{condition.__name__} did not hold in {timeout}s"
        time.sleep(interval)


def _bucket(s3: Any) -> str:
    name = f"r-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def test_sixteen_concurrent_writers_leave_one_consistent_object(stack) -> None:
    s3 = stack.client(max_pool_connections=16)
    bucket = _bucket(s3)
    payloads = [os.urandom(64 * 1024) + bytes([i]) for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda p: s3.put_object(Bucket=bucket, Key="hot", Body=p), payloads))
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [o["Key"] for o in listed] == ["hot"]
    got = s3.get_object(Bucket=bucket, Key="hot")
    body = got["Body"].read()
    assert body in payloads
    assert got["ETag"] == f'"{hashlib.md5(body).hexdigest()}"' == listed[0]["ETag"]


def _physical_uploads(physical: Callable[[str], Any], logical: str) -> list[dict]:
    client = physical("local:edge")
    names = [
        b["Name"] for b in client.list_buckets()["Buckets"] if b["Name"].startswith(f"{logical}-")
    ]
    return [u for n in names for u in client.list_multipart_uploads(Bucket=n).get("Uploads", [])]


def _physical_objects(physical: Callable[[str], Any], logical: str) -> list[dict]:
    client = physical("local:edge")
    names = [
        b["Name"] for b in client.list_buckets()["Buckets"] if b["Name"].startswith(f"{logical}-")
    ]
    return [o for n in names for o in client.list_objects_v2(Bucket=n).get("Contents", [])]


@pytest.mark.parametrize("declared", [False, True], ids=["multipart", "one-put-from-socket"])
def test_proxy_killed_mid_put_leaves_nothing_visible_and_is_cleaned(
    stack, physical, tmp_path: Path, declared: bool
) -> None:
    """Without a length the proxy stores the body as a multipart upload in the region; with
    one (32 MiB) it streams one PUT read off the client's socket (servicekit.socket_relay)."""
    port = free_port()
    doomed = ServiceProcess(
        "services.skystore.proxy",
        tmp_path,
        env={
            **stack.proxies["local:edge"].env,
            "EXTRACT_SKYSTORE_PROXY_PORT": str(port),
        },
        port=port,
    )
    doomed.start()
    try:
        s3 = stack.client()
        bucket = _bucket(s3)
        url = stack.client(url=doomed.url).generate_presigned_url(
            "put_object", Params={"Bucket": bucket, "Key": "partial"}, ExpiresIn=300
        )
        sent, release = threading.Event(), threading.Event()

        def body() -> Iterator[bytes]:
            for _ in range(20):  # past two 8 MiB parts: the region holds a multipart upload
                yield b"x" * MiB
            sent.set()
            release.wait(30)
            if declared:
                yield b"x" * (12 * MiB)  # the rest of the declared length, to a dead proxy

        def put() -> None:
            headers = {"content-length": str(32 * MiB)} if declared else {}
            with contextlib.suppress(httpx.HTTPError):  # the proxy dies under it
                httpx.put(url, content=body(), headers=headers, timeout=60)

        writer = threading.Thread(target=put)
        writer.start()
        assert sent.wait(30)
        if declared:
            metrics = httpx.get(f"{doomed.url}/metrics").text
            assert 'skystore_bodies_total{op="put",path="relay"} 1.0' in metrics
        else:
            _until(lambda: _physical_uploads(physical, bucket), timeout=20)
        os.kill(doomed.process.pid or 0, signal.SIGKILL)
        release.set()
        writer.join(30)
    finally:
        doomed.stop()
    with pytest.raises(ClientError) as missing:
        s3.head_object(Bucket=bucket, Key="partial")
    assert missing.value.response["Error"]["Code"] == "404"
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0

    def cleaned() -> bool:
        stack.locator_call("POST", "/sweep")
        return not _physical_uploads(physical, bucket) and not _physical_objects(physical, bucket)

    _until(cleaned, timeout=30, interval=1)


def _chunked_put(
    stack, bucket: str, key: str, chunks: list[bytes], *, tamper: bool = False
) -> httpx.Response:
    url = f"{stack.proxies['local:edge'].url}/{bucket}/{key}"
    host = url.split("/")[2]
    now = datetime.now(UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    credential = Credential(stack.key_id, now.strftime("%Y%m%d"), "us-east-1", "s3")
    key_bytes = signing_key(stack.secret, credential)
    total = sum(len(c) for c in chunks)
    headers = {
        "host": host,
        "x-amz-content-sha256": STREAMING_SIGNED,
        "x-amz-date": amz_date,
        "x-amz-decoded-content-length": str(total),
        "content-encoding": "aws-chunked",
    }
    signed = sorted(headers)
    canonical = "\n".join(
        [
            "PUT",
            f"/{bucket}/{key}",
            "",
            "".join(f"{h}:{headers[h]}\n" for h in signed),
            ";".join(signed),
            STREAMING_SIGNED,
        ]
    )
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{credential.scope}\n{digest}"
    seed = hmac.new(key_bytes, to_sign.encode(), hashlib.sha256).hexdigest()
    body, previous = b"", seed
    for data in [*chunks, b""]:
        text = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                amz_date,
                credential.scope,
                previous,
                EMPTY_SHA256,
                hashlib.sha256(data).hexdigest(),
            ]
        )
        signature = hmac.new(key_bytes, text.encode(), hashlib.sha256).hexdigest()
        sent = data.upper() if tamper else data
        body += f"{len(data):x};chunk-signature={signature}\r\n".encode() + sent + b"\r\n"
        previous = signature
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={stack.key_id}/{credential.scope}, "
        f"SignedHeaders={';'.join(signed)}, Signature={seed}"
    )
    return httpx.put(url, content=body, headers=headers)


def test_streaming_signed_chunked_upload(stack) -> None:
    s3 = stack.client()
    bucket = _bucket(s3)
    chunks = [b"first chunk, ", b"second chunk"]
    assert _chunked_put(stack, bucket, "k", chunks).status_code == 200
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"".join(chunks)
    refused = _chunked_put(stack, bucket, "bad", chunks, tamper=True)
    assert refused.status_code == 403 and b"SignatureDoesNotMatch" in refused.content
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 1


def test_unversioned_bucket_answers_like_s3(stack) -> None:
    s3 = stack.client()
    bucket = _bucket(s3)
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    versions = s3.list_object_versions(Bucket=bucket)["Versions"]
    assert [(v["Key"], v["VersionId"], v["IsLatest"]) for v in versions] == [("k", "null", True)]
    assert s3.get_object(Bucket=bucket, Key="k", VersionId="null")["Body"].read() == b"x"
    assert s3.get_bucket_versioning(Bucket=bucket).get("Status") is None
    acl = s3.get_object_acl(Bucket=bucket, Key="k")
    assert acl["Grants"][0]["Permission"] == "FULL_CONTROL"
    with pytest.raises(ClientError) as unsupported:
        s3.get_bucket_policy(Bucket=bucket)
    assert unsupported.value.response["Error"]["Code"] == "NotImplemented"
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k", "VersionId": "null"}]})
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_other_principals_cannot_touch_a_bucket(stack) -> None:
    import boto3
    from botocore.config import Config

    bucket = _bucket(stack.client())
    key_id, secret = stack.new_key("user/mallory")
    mallory = boto3.client(
        "s3",
        endpoint_url=stack.proxies["local:cloud"].url,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
    )
    with pytest.raises(ClientError) as denied:
        mallory.list_objects_v2(Bucket=bucket)
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    assert bucket not in [b["Name"] for b in mallory.list_buckets()["Buckets"]]


def _peak_rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def test_large_object_streams_through_with_flat_memory(stack) -> None:
    s3 = stack.client()
    bucket = _bucket(s3)
    pid = stack.proxies["local:edge"].process.pid or 0
    before = _peak_rss(pid)
    size = 192 * MiB
    body = os.urandom(MiB) * 192
    s3.put_object(Bucket=bucket, Key="big", Body=body)
    digest = hashlib.md5(usedforsecurity=False)
    got = s3.get_object(Bucket=bucket, Key="big")
    for chunk in got["Body"].iter_chunks(MiB):
        digest.update(chunk)
    assert got["ContentLength"] == size
    assert digest.hexdigest() == hashlib.md5(body, usedforsecurity=False).hexdigest()
    grown = _peak_rss(pid) - before
    assert grown < 96 * MiB, f"the proxy's peak memory grew by {grown / MiB:.0f} MiB"


def test_abandoned_multipart_upload_is_rolled_back_and_its_parts_removed(stack, physical) -> None:
    s3 = stack.client()
    bucket = _bucket(s3)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="left")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="left", UploadId=upload, PartNumber=1, Body=b"p" * MiB)
    assert _physical_uploads(physical, bucket)
    time.sleep(5.5)  # the stack's multipart timeout is 5 s

    def rolled_back() -> bool:
        stack.locator_call("POST", "/sweep")
        return not _physical_uploads(physical, bucket)

    _until(rolled_back, timeout=30, interval=1)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    with pytest.raises(ClientError) as gone:
        s3.upload_part(Bucket=bucket, Key="left", UploadId=upload, PartNumber=2, Body=b"late")
    assert gone.value.response["Error"]["Code"] == "NoSuchUpload"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="left")
