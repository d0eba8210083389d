"""Large GET bodies relayed socket to socket in the proxy (servicekit.socket_relay): the bytes,
ranges, keep-alive afterwards, a client leaving halfway, and the streamed path beside it."""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import socket
import struct
import uuid
from collections import Counter
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError

from servicekit.infra import wait_until
from servicekit.testing.metrics import scraped
from services.skystore.proxy.s3http import S3Http

MiB = 1024 * 1024


def _bodies(proxy_url: str, op: str = "get") -> Counter[str]:
    return scraped(proxy_url, "skystore_bodies_total", by="path", op=op)


def _bucket_with(stack, body: bytes) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    s3 = stack.client()
    bucket = f"relay-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="big", Body=body)
    return bucket, "big"


def _presigned_path(stack, bucket: str, key: str) -> str:  # type: ignore[no-untyped-def]
    url = stack.client().generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=600
    )
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_large_bodies_are_relayed_intact_whole_and_ranged(stack) -> None:
    body = os.urandom(3 * MiB + 5)
    bucket, key = _bucket_with(stack, body)
    s3 = stack.client()
    before = _bodies(stack.proxies["local:edge"].url)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    ranged = s3.get_object(Bucket=bucket, Key=key, Range="bytes=1000-2501000")
    assert ranged["ContentRange"] == f"bytes 1000-2501000/{len(body)}"
    assert ranged["Body"].read() == body[1000:2501001]
    assert s3.get_object(Bucket=bucket, Key=key, Range="bytes=-100")["Body"].read() == body[-100:]
    after = _bodies(stack.proxies["local:edge"].url)
    assert after["relay"] - before["relay"] == 2
    assert after["buffered"] - before["buffered"] == 1  # the last 100 bytes


def test_the_connection_stays_usable_after_a_relayed_body(stack) -> None:
    body = os.urandom(2 * MiB)
    bucket, key = _bucket_with(stack, body)
    path = _presigned_path(stack, bucket, key)
    proxy = urlsplit(stack.proxies["local:edge"].url)
    connection = http.client.HTTPConnection(proxy.hostname or "", proxy.port, timeout=30)
    try:
        for _ in range(3):
            connection.request("GET", path)
            response = connection.getresponse()
            assert response.status == 200
            assert not response.will_close
            assert response.read() == body
            if _ == 0:
                first = connection.sock
        assert connection.sock is first  # one TCP connection served all three
    finally:
        connection.close()


def test_a_client_leaving_mid_body_leaves_the_proxy_serving(stack) -> None:
    body = os.urandom(48 * MiB)
    bucket, key = _bucket_with(stack, body)
    path = _presigned_path(stack, bucket, key)
    proxy = urlsplit(stack.proxies["local:edge"].url)
    with socket.create_connection((proxy.hostname, proxy.port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {proxy.netloc}\r\n\r\n".encode())
        assert sock.recv(64 * 1024).startswith(b"HTTP/1.1 200")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # The connection was reset with most of the body unsent; the proxy serves on.
    assert stack.client().get_object(Bucket=bucket, Key=key)["Body"].read() == body
    log = stack.root / "local-edge" / "services.skystore.proxy.log"
    noticed = wait_until(lambda: "response body relay aborted" in log.read_text(), timeout=10)
    assert noticed, "the proxy never noticed the reset"


def test_with_the_relay_off_large_bodies_stream_through_python(stack) -> None:
    body = os.urandom(2 * MiB + 1)
    bucket, key = _bucket_with(stack, body)
    proxy = stack.proxy_process(
        "local:edge", "edge-no-relay", EXTRACT_SKYSTORE_PROXY_RELAY_MIN_BYTES="0"
    )
    proxy.start()
    try:
        s3 = stack.client(url=proxy.url)
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
        bodies = _bodies(proxy.url)
        assert (bodies["buffered"], bodies["stream"], bodies["relay"]) == (0, 1, 0)
    finally:
        proxy.stop()


async def test_region_connections_are_reused_and_replaced_when_stale(s3_regions, physical) -> None:
    body = os.urandom(3 * MiB)
    bucket = f"raw-{uuid.uuid4().hex[:8]}"
    physical("local:edge").create_bucket(Bucket=bucket)
    physical("local:edge").put_object(Bucket=bucket, Key="k", Body=body)
    http = S3Http(s3_regions["local:edge"])
    try:

        async def read_all() -> tuple[bytes, int]:
            source = await http.get_socket(bucket, "k")
            with socket.socket(fileno=os.dup(source.fileno())) as sock:
                sock.setblocking(True)
                rest = b""
                while len(source.prefix) + len(rest) < source.length:
                    rest += sock.recv(source.length)
                port = sock.getsockname()[1]
            source.close(consumed=True)
            return source.prefix + rest, port

        first, port = await read_all()
        again, port_again = await read_all()
        assert first == again == body
        assert port_again == port  # the same connection, kept after a consumed body
        stale = http._idle[0]  # the store drops the idle connection
        assert stale.sock is not None
        stale.sock.shutdown(socket.SHUT_RDWR)
        replaced, port_new = await read_all()
        assert replaced == body
        assert port_new != port
    finally:
        await http.aclose()


def test_large_puts_are_read_off_the_socket_and_stored_whole(stack, physical) -> None:
    body = os.urandom(5 * MiB + 3)
    bucket = f"relay-{uuid.uuid4().hex[:8]}"
    s3 = stack.client()
    s3.create_bucket(Bucket=bucket)
    before = _bodies(stack.proxies["local:edge"].url, "put")
    put = s3.put_object(Bucket=bucket, Key="big", Body=body)  # payload signed: SHA-256 checked
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert _bodies(stack.proxies["local:edge"].url, "put")["relay"] - before["relay"] == 1
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == body
    assert s3.head_object(Bucket=bucket, Key="big")["ContentLength"] == len(body)


def test_a_large_put_with_a_wrong_digest_stores_nothing(stack) -> None:
    body = os.urandom(3 * MiB)
    bucket, key = _bucket_with(stack, b"the old version")
    s3 = stack.client()
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentMD5=wrong)
    assert caught.value.response["Error"]["Code"] == "BadDigest"
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"the old version"


def _raw_put(stack, bucket: str, key: str, length: int, url: str) -> socket.socket:  # type: ignore[no-untyped-def]
    """A socket that has sent the head of a presigned PUT of `length` bytes, and no body."""
    target = stack.client(url=url).generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=600
    )
    parts = urlsplit(target)
    sock = socket.create_connection((parts.hostname, parts.port))
    head = f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
    sock.sendall(f"{head}Content-Length: {length}\r\n\r\n".encode())
    return sock


def test_a_client_leaving_mid_put_leaves_nothing_and_the_proxy_serving(stack) -> None:
    bucket, key = _bucket_with(stack, b"kept")
    url = stack.proxies["local:edge"].url
    with _raw_put(stack, bucket, key, 8 * MiB, url) as sock:
        sock.sendall(os.urandom(2 * MiB))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s3 = stack.client()
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"kept"
    body = os.urandom(2 * MiB)
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body


def test_a_stalled_put_body_is_refused_after_the_relay_timeout(stack) -> None:
    bucket, key = _bucket_with(stack, b"kept")
    proxy = stack.proxy_process(
        "local:edge", "edge-short-relay", EXTRACT_SKYSTORE_PROXY_RELAY_TIMEOUT="1"
    )
    proxy.start()
    try:
        with _raw_put(stack, bucket, key, 4 * MiB, proxy.url) as sock:
            sock.sendall(os.urandom(2 * MiB))
            sock.settimeout(20)
            answer = b""
            while b"</Error>" not in answer:
                piece = sock.recv(65536)
                assert piece, f"closed without an answer: {answer!r}"
                answer += piece
        assert answer.startswith(b"HTTP/1.1 400")
        assert b"<Code>IncompleteBody</Code>" in answer
        assert b"connection: close" in answer.lower()
        s3 = stack.client()
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"kept"
    finally:
        proxy.stop()
