"""The proxy's GET to a region's S3 store (S3Http.get): a real SeaweedFS region, one that
answers with a server error, and one that is down."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from servicekit.errors import NotFound, ServiceUnavailable, UpstreamError
from servicekit.infra.ports import free_port
from servicekit.infra.seaweed import S3Endpoint
from services.skystore.proxy.s3http import S3Http

INTERNAL_ERROR = (
    b"<?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>InternalError</Code>"
    b"<Message>the disk is on fire</Message></Error>"
)


@pytest.fixture
def edge(s3_regions: dict[str, S3Endpoint]) -> S3Endpoint:
    return s3_regions["local:edge"]


@pytest.fixture
async def http(edge: S3Endpoint) -> AsyncIterator[S3Http]:
    client = S3Http(edge)
    yield client
    await client.aclose()


@pytest.fixture
def stored(edge: S3Endpoint, physical: Callable[[str], Any]) -> tuple[str, bytes]:
    """(a bucket, the 300 KiB object stored under "k" in it) in the edge region."""
    bucket = f"s3http-{uuid.uuid4().hex[:12]}"
    body = os.urandom(300 * 1024)
    s3 = physical("local:edge")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=body)
    return bucket, body


@asynccontextmanager
async def answering(response: bytes) -> AsyncIterator[S3Endpoint]:
    """A region whose store answers every request with `response`."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(response)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield S3Endpoint("local:broken", f"http://127.0.0.1:{port}", "key", "secret")


async def test_a_get_returns_the_headers_and_the_body_in_pieces(
    http: S3Http, stored: tuple[str, bytes]
) -> None:
    bucket, body = stored
    headers, chunks = await http.get(bucket, "k")
    assert headers["Content-Length"] == headers["content-length"] == str(len(body))
    assert b"".join([chunk async for chunk in chunks]) == body


async def test_a_range_get_returns_that_range(http: S3Http, stored: tuple[str, bytes]) -> None:
    bucket, body = stored
    headers, chunks = await http.get(bucket, "k", range_header="bytes=10-19")
    assert headers["content-range"] == f"bytes 10-19/{len(body)}"
    assert b"".join([chunk async for chunk in chunks]) == body[10:20]


async def test_a_body_abandoned_midway_does_not_hold_up_the_next_get(
    http: S3Http, stored: tuple[str, bytes]
) -> None:
    bucket, body = stored
    _, chunks = await http.get(bucket, "k")
    assert await anext(aiter(chunks))
    await chunks.aclose()  # type: ignore[attr-defined]
    _, again = await http.get(bucket, "k")
    assert b"".join([chunk async for chunk in again]) == body


async def test_a_missing_key_is_no_such_key(http: S3Http, stored: tuple[str, bytes]) -> None:
    bucket, _ = stored
    with pytest.raises(NotFound) as missing:
        await http.get(bucket, "absent")
    assert missing.value.code == "NoSuchKey"


async def test_a_server_error_of_the_store_is_an_upstream_error() -> None:
    answer = (
        b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/xml\r\n"
        b"content-length: %d\r\n\r\n%b" % (len(INTERNAL_ERROR), INTERNAL_ERROR)
    )
    async with answering(answer) as endpoint:
        http = S3Http(endpoint)
        try:
            with pytest.raises(UpstreamError, match="InternalError"):
                await http.get("bucket", "k")
        finally:
            await http.aclose()


async def test_a_store_that_is_down_is_service_unavailable() -> None:
    http = S3Http(S3Endpoint("local:gone", f"http://127.0.0.1:{free_port()}", "key", "secret"))
    try:
        with pytest.raises(ServiceUnavailable, match="unreachable"):
            await http.get("bucket", "k")
    finally:
        await http.aclose()


async def test_a_store_that_hangs_up_mid_answer_is_service_unavailable() -> None:
    async with answering(b"HTTP/1.1 200 OK\r\ncontent-le") as endpoint:
        http = S3Http(endpoint)
        try:
            with pytest.raises(ServiceUnavailable, match="unreachable"):
                await http.get("bucket", "k")
        finally:
            await http.aclose()
