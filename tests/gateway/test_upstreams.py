"""The upstream client: what it adds to a request, and how long it waits on a stalled upstream."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from conftest import GatewayFactory
from gw_servers import ThreadedServer

Clients = Callable[[ThreadedServer], httpx.AsyncClient]
MiB = 1024 * 1024


@pytest.fixture
def stalled_upstream() -> Iterator[str]:
    """An upstream that accepts connections and never reads a byte of them."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()


async def test_nothing_is_added_to_what_the_client_sent(
    make_gateway: GatewayFactory, client_of: Clients
) -> None:
    client = client_of(make_gateway())
    for name in ("user-agent", "accept", "accept-encoding"):
        client.headers.pop(name, None)
    response = await client.post("/test/echo", content=b"raw")
    names = {name for name, _ in response.json()["headers"]}
    assert not names & {"user-agent", "accept", "accept-encoding", "content-type"}


async def test_an_upstream_that_stops_taking_the_body_gets_a_504_after_the_write_timeout(
    make_gateway: GatewayFactory, client_of: Clients, stalled_upstream: str
) -> None:
    client = client_of(
        make_gateway(staging_url=stalled_upstream, write_timeout=0.5, read_timeout=60)
    )

    async def body() -> AsyncIterator[bytes]:
        for _ in range(128):  # far more than the sockets' buffers hold
            yield b"x" * MiB

    started = time.monotonic()
    response = await client.put("/test/upload", content=body())
    assert response.status_code == 504
    assert "did not answer in time" in response.json()["detail"]
    assert time.monotonic() - started < 30
