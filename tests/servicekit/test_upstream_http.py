"""The upstream HTTP/1.1 client against scripted upstreams: framing, reuse, timeouts, failures."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from servicekit.infra.ports import free_port
from servicekit.upstream_http import ConnectionPool
from servicekit.upstream_response import (
    UpstreamFailure,
    UpstreamTimeout,
    UpstreamUnreachable,
)

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class Scripted:
    """A listening upstream that answers each connection with `answer`, counting connections
    and keeping every request head it read."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.heads: list[bytes] = []
        self.port = 0

    async def read_head(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        return head

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.answer(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def scripted(answer: Callable[[Scripted], Answer]) -> AsyncIterator[Scripted]:
    upstream = Scripted(lambda r, w: answer(upstream)(r, w))
    server = await asyncio.start_server(upstream._serve, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    async with server:
        yield upstream


def pool_for(port: int, **overrides: float) -> ConnectionPool:
    settings = {
        "limit": 10,
        "keepalive": 4.0,
        "connect_timeout": 2.0,
        "read_timeout": 5.0,
        "write_timeout": 5.0,
        **overrides,
    }
    return ConnectionPool("test", "127.0.0.1", port, **settings)  # type: ignore[arg-type]


def answering(*responses: bytes, then_close: bool = False) -> Callable[[Scripted], Answer]:
    """Each request gets the next of `responses` (the last one repeats)."""

    def answer(upstream: Scripted) -> Answer:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await upstream.read_head(reader)
                writer.write(responses[min(len(upstream.heads) - 1, len(responses) - 1)])
                await writer.drain()
                if then_close:
                    return

        return serve

    return answer


async def get(pool: ConnectionPool, target: str = "/x", method: str = "GET") -> tuple[int, bytes]:
    response = await pool.request(method, target, [(b"accept", b"*/*")])
    return response.status, await response.read(1024 * 1024)


async def test_a_connection_is_kept_for_the_next_request() -> None:
    async with scripted(answering(OK)) as upstream:
        pool = pool_for(upstream.port)
        assert await get(pool) == (200, b"ok")
        assert await get(pool) == (200, b"ok")
        assert upstream.connections == 1
        await pool.close()


async def test_the_head_names_the_host_and_what_the_caller_sent() -> None:
    async with scripted(answering(OK)) as upstream:
        pool = pool_for(upstream.port)
        response = await pool.request("POST", "/a%2Fb?q=1", [(b"x-one", b"1")], b"body")
        await response.read(100)
        host = f"host: 127.0.0.1:{upstream.port}\r\n".encode()
        assert upstream.heads[0] == (
            b"POST /a%2Fb?q=1 HTTP/1.1\r\nx-one: 1\r\n" + host + b"content-length: 4\r\n\r\n"
        )
        await pool.close()


async def test_a_chunked_response_is_decoded_and_the_connection_kept() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    async with scripted(answering(chunked, OK)) as upstream:
        pool = pool_for(upstream.port)
        assert await get(pool) == (200, b"hello world")
        assert await get(pool) == (200, b"ok")
        assert upstream.connections == 1
        await pool.close()


async def test_a_connection_the_upstream_closes_after_answering_is_not_reused() -> None:
    closing = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
    async with scripted(answering(closing, then_close=True)) as upstream:
        pool = pool_for(upstream.port)
        assert await get(pool) == (200, b"ok")
        assert await get(pool) == (200, b"ok")
        assert upstream.connections == 2
        await pool.close()


async def test_an_idle_connection_the_upstream_closed_is_not_used() -> None:
    async with scripted(answering(OK, then_close=True)) as upstream:
        pool = pool_for(upstream.port)
        assert await get(pool) == (200, b"ok")
        await asyncio.sleep(0.1)  # the upstream's close arrives while the connection is idle
        assert await get(pool) == (200, b"ok")
        assert upstream.connections == 2
        await pool.close()


async def test_a_body_without_length_or_chunks_ends_when_the_upstream_closes() -> None:
    until_close = b"HTTP/1.1 200 OK\r\n\r\nall of it"
    async with scripted(answering(until_close, then_close=True)) as upstream:
        pool = pool_for(upstream.port)
        assert await get(pool) == (200, b"all of it")
        await pool.close()


async def test_a_head_response_has_no_body_and_the_connection_stays_usable() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"
    async with scripted(answering(head, OK)) as upstream:
        pool = pool_for(upstream.port)
        assert await get(pool, method="HEAD") == (200, b"")
        assert await get(pool) == (200, b"ok")
        assert upstream.connections == 1
        await pool.close()


async def test_an_interim_100_continue_is_skipped() -> None:
    async with scripted(answering(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)) as upstream:
        pool = pool_for(upstream.port)
        assert await get(pool) == (200, b"ok")
        await pool.close()


async def test_the_body_streams_in_the_pieces_the_upstream_sends() -> None:
    def answer(upstream: Scripted) -> Answer:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await upstream.read_head(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nabc")
            await reader.read(1)  # the rest only once the client has asked for more

        return serve

    async with scripted(answer) as upstream:
        pool = pool_for(upstream.port)
        response = await pool.request("GET", "/", [])
        chunks = response.chunks()
        assert await anext(chunks) == b"abc"
        await chunks.aclose()
        await pool.close()


async def test_a_silent_upstream_times_out() -> None:
    def answer(upstream: Scripted) -> Answer:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await upstream.read_head(reader)
            await reader.read()  # never answers

        return serve

    async with scripted(answer) as upstream:
        pool = pool_for(upstream.port, read_timeout=0.2)
        with pytest.raises(UpstreamTimeout):
            await asyncio.wait_for(get(pool), 5)
        await pool.close()


async def test_an_upstream_that_stalls_mid_body_times_out() -> None:
    def answer(upstream: Scripted) -> Answer:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await upstream.read_head(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
            await reader.read()

        return serve

    async with scripted(answer) as upstream:
        pool = pool_for(upstream.port, read_timeout=0.2)
        with pytest.raises(UpstreamTimeout):
            await asyncio.wait_for(get(pool), 5)
        await pool.close()


async def test_a_connection_closed_mid_body_fails_the_read() -> None:
    cut = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b"
    async with scripted(answering(cut, then_close=True)) as upstream:
        pool = pool_for(upstream.port)
        with pytest.raises(UpstreamFailure, match="closed early"):
            await get(pool)
        await pool.close()


async def test_garbage_instead_of_http_is_a_failure() -> None:
    async with scripted(answering(b"HELLO THERE\r\n\r\n")) as upstream:
        pool = pool_for(upstream.port)
        with pytest.raises(UpstreamFailure, match="invalid HTTP"):
            await get(pool)
        await pool.close()


async def test_a_body_over_the_read_limit_fails_and_the_connection_is_dropped() -> None:
    big = b"HTTP/1.1 200 OK\r\ncontent-length: 2000\r\n\r\n" + b"x" * 2000
    async with scripted(answering(big, OK)) as upstream:
        pool = pool_for(upstream.port)
        response = await pool.request("GET", "/", [])
        with pytest.raises(UpstreamFailure, match="exceeds"):
            await response.read(1000)
        assert await get(pool) == (200, b"ok")
        assert upstream.connections == 2
        await pool.close()


async def test_nobody_listening_is_unreachable() -> None:
    pool = pool_for(free_port())
    with pytest.raises(UpstreamUnreachable):
        await get(pool)


async def test_cr_or_lf_in_a_header_is_refused_before_anything_is_sent() -> None:
    async with scripted(answering(OK)) as upstream:
        pool = pool_for(upstream.port)
        with pytest.raises(ValueError, match="CR or LF"):
            await pool.request("GET", "/", [(b"x-a", b"1\r\nx-injected: 2")])
        assert upstream.heads == []
        await pool.close()


async def test_a_streamed_body_goes_in_chunks() -> None:
    received: list[bytes] = []

    def answer(upstream: Scripted) -> Answer:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await upstream.read_head(reader)
            received.append(await reader.readuntil(b"0\r\n\r\n"))
            writer.write(OK)
            await writer.drain()

        return serve

    async def body() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b""
        yield b"defgh"

    async with scripted(answer) as upstream:
        pool = pool_for(upstream.port)
        response = await pool.request("PUT", "/", [], body())
        assert await response.read(10) == b"ok"
        assert b"transfer-encoding: chunked\r\n" in upstream.heads[0]
        assert received == [b"3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n"]
        await pool.close()


async def test_the_body_iterators_own_exception_comes_out_as_itself() -> None:
    class Refused(Exception):
        pass

    def answer(upstream: Scripted) -> Answer:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await upstream.read_head(reader)
            await reader.read()

        return serve

    async def body() -> AsyncIterator[bytes]:
        yield b"abc"
        raise Refused

    async with scripted(answer) as upstream:
        pool = pool_for(upstream.port)
        with pytest.raises(Refused):
            await pool.request("PUT", "/", [], body())
        await pool.close()


async def test_requests_over_the_limit_wait_for_a_connection() -> None:
    def answer(upstream: Scripted) -> Answer:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await upstream.read_head(reader)
                await asyncio.sleep(0.05)
                writer.write(OK)
                await writer.drain()

        return serve

    async with scripted(answer) as upstream:
        pool = pool_for(upstream.port, limit=1)
        results = await asyncio.gather(*(get(pool) for _ in range(3)))
        assert results == [(200, b"ok")] * 3
        assert upstream.connections == 1
        await pool.close()


async def test_waiting_for_a_connection_is_bounded_by_the_connect_timeout() -> None:
    def answer(upstream: Scripted) -> Answer:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await upstream.read_head(reader)
            await reader.read()

        return serve

    async with scripted(answer) as upstream:
        pool = pool_for(upstream.port, limit=1, connect_timeout=0.2)
        first = asyncio.create_task(get(pool))
        await asyncio.sleep(0.05)
        with pytest.raises(UpstreamUnreachable, match="connect timed out"):
            await get(pool)
        first.cancel()
        await pool.close()


async def test_a_large_body_read_slowly_holds_the_upstream_back() -> None:
    size, piece = 64 * 1024 * 1024, b"x" * (1024 * 1024)
    sent = 0

    def answer(upstream: Scripted) -> Answer:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal sent
            await upstream.read_head(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
            while sent < size:
                writer.write(piece)
                await writer.drain()  # waits while the client has paused reading
                sent += len(piece)

        return serve

    async with scripted(answer) as upstream:
        pool = pool_for(upstream.port)
        response = await pool.request("GET", "/", [])
        received = largest = ahead = 0
        async for chunk in response.chunks():
            received += len(chunk)
            largest = max(largest, len(chunk))
            ahead = max(ahead, sent - received)
            await asyncio.sleep(0.001)  # a slow client
        await pool.close()
    assert received == size
    # What waits in the proxy is what arrived before reading paused (256 KiB and one read);
    # the rest stays in the sockets' buffers and the upstream's unsent data.
    assert largest <= 1024 * 1024
    assert ahead < size // 2


def test_a_pool_for_a_url_takes_its_host_port_and_scheme() -> None:
    plain = ConnectionPool.for_url("http://127.0.0.1:8102/base", limit=3, timeout=2.0)
    assert (plain.host, plain.port, plain.tls, plain.limit) == ("127.0.0.1", 8102, None, 3)
    assert (plain.read_timeout, plain.write_timeout, plain.name) == (
        2.0,
        2.0,
        "http://127.0.0.1:8102/base",
    )
    secure = ConnectionPool.for_url("https://locator.example", limit=1, timeout=1.0)
    assert (secure.host, secure.port) == ("locator.example", 443)
    assert isinstance(secure.tls, ssl.SSLContext)
    assert secure.tls.verify_mode == ssl.CERT_REQUIRED
