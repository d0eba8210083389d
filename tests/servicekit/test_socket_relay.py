"""The in-kernel relay between two sockets: bytes intact, and every way it can stop early."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from servicekit.socket_relay import RelayError, put_from_socket, relay

pytestmark = pytest.mark.skipif(not hasattr(os, "splice"), reason="splice(2) is Linux-only")


@pytest.fixture
def pairs() -> Iterator[tuple[socket.socket, socket.socket, socket.socket, socket.socket]]:
    """(upstream writer, relay source, relay target, client reader), all TCP on loopback."""
    made: list[socket.socket] = []

    def pair() -> tuple[socket.socket, socket.socket]:
        server = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        server.close()
        made.extend((client, accepted))
        return client, accepted

    upstream, source = pair()
    target, reader = pair()
    source.setblocking(False)
    target.setblocking(False)
    yield upstream, source, target, reader
    for sock in made:
        sock.close()


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    # The relay under test may stop reading and the fixture close the socket under it.
    with contextlib.suppress(OSError):
        sock.sendall(data)


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    got = bytearray()
    while len(got) < count:
        chunk = sock.recv(min(1 << 20, count - len(got)))
        if not chunk:
            break
        got += chunk
    return bytes(got)


def test_prefix_then_exactly_count_bytes_arrive_and_the_rest_stays(pairs) -> None:
    upstream, source, target, reader = pairs
    body = os.urandom(5 * 1024 * 1024 + 17)
    after = b"the next response"
    writer = threading.Thread(target=upstream.sendall, args=(body + after,))
    writer.start()
    received: list[bytes] = []
    catcher = threading.Thread(target=lambda: received.append(_read_exactly(reader, 3 + len(body))))
    catcher.start()
    relay(source.fileno(), target.fileno(), len(body), prefix=b"abc", timeout=10)
    writer.join()
    catcher.join()
    assert received[0] == b"abc" + body
    source.setblocking(True)
    assert _read_exactly(source, len(after)) == after  # nothing read past the body


def test_upstream_closing_early_is_an_error(pairs) -> None:
    upstream, source, target, _ = pairs
    upstream.sendall(b"x" * 1000)
    upstream.close()
    with pytest.raises(RelayError, match="closed with 1000 of 2000 bytes to go"):
        relay(source.fileno(), target.fileno(), 2000, timeout=10)


def test_client_gone_is_an_error(pairs) -> None:
    upstream, source, target, reader = pairs
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    reader.close()  # with linger 0: a reset, so the relay's next write fails
    threading.Thread(target=_send_quietly, args=(upstream, b"y" * (8 << 20)), daemon=True).start()
    with pytest.raises(RelayError, match="client connection failed"):
        relay(source.fileno(), target.fileno(), 8 << 20, timeout=10)


def test_a_silent_upstream_times_out(pairs) -> None:
    upstream, source, target, reader = pairs
    upstream.sendall(b"z" * 10)
    with pytest.raises(RelayError, match=r"the upstream stalled for 0\.2 s"):
        relay(source.fileno(), target.fileno(), 20, timeout=0.2)
    assert reader.recv(100) == b"z" * 10  # what did come was passed on


def test_a_client_that_stops_reading_times_out(pairs) -> None:
    upstream, source, target, _ = pairs
    size = 64 << 20  # far more than both socket buffers and the pipe hold
    threading.Thread(target=_send_quietly, args=(upstream, b"w" * size), daemon=True).start()
    with pytest.raises(RelayError, match=r"the client stalled for 0\.3 s"):
        relay(source.fileno(), target.fileno(), size, timeout=0.3)


class _Store(http.server.BaseHTTPRequestHandler):
    """Answers a PUT with the SHA-256 of the body it took."""

    def do_PUT(self) -> None:
        length = int(self.headers["content-length"])
        body = self.rfile.read(length)
        if len(body) < length:
            return  # the sender went away mid-body: nobody to answer
        answer = hashlib.sha256(body).hexdigest().encode()
        self.send_response(201)
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def store() -> Iterator[tuple[str, int]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Store)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[:2]  # type: ignore[misc]
    server.shutdown()
    server.server_close()


async def test_a_put_from_socket_sends_the_bytes_read_then_the_sockets(pairs, store) -> None:
    client, source, _, _ = pairs
    body = os.urandom(3 * 1024 * 1024 + 5)
    first, rest = body[:1000], body[1000:]
    sender = threading.Thread(target=client.sendall, args=(rest,))
    sender.start()
    digest = hashlib.sha256()
    status, _, answer = await put_from_socket(
        http.client.HTTPConnection(*store, timeout=10),
        "/b/k",
        {"host": "store", "content-length": str(len(body))},
        (first, source.fileno(), len(body)),
        digest.update,
        stall_timeout=5,
    )
    sender.join()
    assert status == 201
    assert answer.decode() == digest.hexdigest() == hashlib.sha256(body).hexdigest()


def _ignore(_piece: memoryview) -> None:
    pass


async def test_a_put_from_socket_whose_body_falls_short_is_a_relay_error(pairs, store) -> None:
    client, source, _, _ = pairs
    connection = http.client.HTTPConnection(*store, timeout=10)
    with pytest.raises(RelayError, match="were announced"):
        await put_from_socket(connection, "/b/k", {}, (b"four", None, 5), _ignore, stall_timeout=5)
    client.sendall(b"abc")
    client.close()  # the client leaves two bytes short
    with pytest.raises(RelayError, match="closed with 2 of 5 bytes"):
        await put_from_socket(
            http.client.HTTPConnection(*store, timeout=10),
            "/b/k",
            {"host": "store", "content-length": "5"},
            (b"", source.fileno(), 5),
            _ignore,
            stall_timeout=5,
        )
