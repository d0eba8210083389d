"""A small proxied response leaves the gateway in one TLS record: head and body in one write."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest
from conftest import GatewayFactory

_APPLICATION_DATA = 23


def _records(raw: bytes) -> list[tuple[int, int]]:
    """(content type, length) of every complete TLS record in `raw`."""
    records, i = [], 0
    while i + 5 <= len(raw):
        length = int.from_bytes(raw[i + 3 : i + 5], "big")
        records.append((raw[i], length))
        i += 5 + length
    return records


def _response_records(port: int, ca: Path, path: str) -> tuple[bytes, list[tuple[int, int]]]:
    """GET `path` over TLS 1.2 (whose handshake is not application data); the decrypted
    response and the records it came in."""
    context = ssl.create_default_context(cafile=str(ca))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                incoming.write(sock.recv(65536))
        sock.sendall(outgoing.read())
        tls.write(f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".encode())
        sock.sendall(outgoing.read())
        raw, plain = b"", b""
        while b"\r\n\r\n" not in plain or len(plain.partition(b"\r\n\r\n")[2]) < _length(plain):
            chunk = sock.recv(65536)
            if not chunk:
                break
            raw += chunk
            incoming.write(chunk)
            try:
                while True:
                    plain += tls.read(65536)
            except ssl.SSLWantReadError:
                pass
    return plain, _records(raw)


def _length(plain: bytes) -> int:
    head = plain.partition(b"\r\n\r\n")[0].decode("latin-1").lower()
    for line in head.split("\r\n"):
        if line.startswith("content-length:"):
            return int(line.split(":", 1)[1])
    return 1 << 30


@pytest.mark.parametrize("path", ["/test/echo", "/healthz"])
def test_a_small_response_leaves_in_one_tls_record(
    make_gateway: GatewayFactory, tls_files: tuple[Path, Path, Path], path: str
) -> None:
    gateway = make_gateway()
    plain, records = _response_records(gateway.port, tls_files[0], path)
    assert plain.startswith(b"HTTP/1.1 200 ")
    assert [kind for kind, _ in records] == [_APPLICATION_DATA]
