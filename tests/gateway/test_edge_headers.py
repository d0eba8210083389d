"""Security headers and CORS on every response of the gateway."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from conftest import GatewayFactory
from gw_servers import ThreadedServer
from starlette.types import Message, Receive, Scope, Send

from gateway.edge_headers import EdgeHeadersMiddleware

Clients = Callable[[ThreadedServer], httpx.AsyncClient]


async def test_every_response_carries_the_security_headers(
    make_gateway: GatewayFactory, client_of: Clients
) -> None:
    client = client_of(make_gateway())
    for response in (await client.get("/test/echo"), await client.get("/nowhere")):
        assert response.headers["strict-transport-security"].startswith("max-age=")
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"


async def test_cors_answers_only_listed_origins(
    make_gateway: GatewayFactory, client_of: Clients
) -> None:
    client = client_of(make_gateway(cors_origins=["https://app.example.org"]))
    preflight = {"access-control-request-method": "POST"}
    allowed = await client.options(
        "/test/echo", headers={"origin": "https://app.example.org", **preflight}
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.org"
    refused = await client.options(
        "/test/echo", headers={"origin": "https://evil.example.org", **preflight}
    )
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    simple = await client.get("/test/echo", headers={"origin": "https://evil.example.org"})
    assert "access-control-allow-origin" not in simple.headers


async def _answer_with(scope_headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"vary", b"Accept-Encoding"),
            (b"strict-transport-security", b"max-age=1"),
            (b"x-frame-options", b"SAMEORIGIN"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    middleware = EdgeHeadersMiddleware(app, allow_origins=["https://app.example.org"])
    scope = {"type": "http", "method": "GET", "path": "/", "headers": scope_headers}
    await middleware(scope, receive, send)
    return list(sent[0]["headers"])


async def test_without_an_origin_vary_names_origin_as_cors_would() -> None:
    headers = await _answer_with([])
    assert [v for n, v in headers if n == b"vary"] == [b"Accept-Encoding, Origin"]


async def test_the_edges_hsts_replaces_the_upstreams_and_other_upstream_values_stay() -> None:
    for request_headers in ([], [(b"origin", b"https://app.example.org")]):
        headers = await _answer_with(request_headers)
        assert [v for n, v in headers if n == b"strict-transport-security"] == [
            b"max-age=63072000; includeSubDomains"
        ]
        assert [v for n, v in headers if n == b"x-frame-options"] == [b"SAMEORIGIN"]
        assert (b"x-content-type-options", b"nosniff") in headers


async def test_a_listed_origin_is_answered_with_its_name() -> None:
    headers = await _answer_with([(b"origin", b"https://app.example.org")])
    assert (b"access-control-allow-origin", b"https://app.example.org") in headers
