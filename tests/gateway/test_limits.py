"""Limits and hygiene: 429 per address and per principal, 431, CORS, security headers."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from conftest import GatewayFactory
from gw_servers import ThreadedServer

from gateway.limits import RateLimiter
from servicekit.errors import TooManyRequests

Clients = Callable[[ThreadedServer], httpx.AsyncClient]


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(2, 3, what="test", clock=clock)
    for _ in range(3):
        limiter.check("a")
    with pytest.raises(TooManyRequests) as refused:
        limiter.check("a")
    assert refused.value.headers["Retry-After"] == "1"
    limiter.check("b")  # buckets are per key
    clock.now = 0.5  # one token back at 2/s
    limiter.check("a")
    with pytest.raises(TooManyRequests):
        limiter.check("a")


async def test_too_many_requests_from_one_address_get_429_with_retry_after(
    make_gateway: GatewayFactory, client_of: Clients
) -> None:
    client = client_of(make_gateway(rate_per_ip=0.5, burst_per_ip=3))
    statuses = [(await client.get("/test/echo")).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    refused = await client.get("/test/echo")
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "2"
    assert refused.headers["content-type"] == "application/problem+json"
    nuvla = await client.get("/api/cloud-entry-point")
    assert nuvla.status_code == 429
    assert nuvla.json()["status"] == 429


async def test_a_logged_in_principal_has_its_own_rate(
    make_gateway: GatewayFactory, client_of: Clients
) -> None:
    client = client_of(
        make_gateway(admin_password="pw", rate_per_principal=0.1, burst_per_principal=2)
    )
    login = await client.post(
        "/api/session",
        json={
            "template": {"href": "session-template/password", "username": "admin", "password": "pw"}
        },
    )
    assert login.status_code == 201
    assert [(await client.get("/test/echo")).status_code for _ in range(2)] == [200, 200]
    refused = await client.get("/test/echo")
    assert refused.status_code == 429
    assert "per principal" in refused.json()["detail"]
    client.cookies.clear()
    assert (await client.get("/test/echo")).status_code == 200  # anonymous: per address only


async def test_oversized_headers_get_431(make_gateway: GatewayFactory, client_of: Clients) -> None:
    client = client_of(make_gateway(max_header_bytes=2048))
    response = await client.get("/test/echo", headers={"x-big": "b" * 4096})
    assert response.status_code == 431
    assert (await client.get("/test/echo", headers={"x-small": "s" * 100})).status_code == 200
