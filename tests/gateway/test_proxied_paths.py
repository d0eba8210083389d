"""Which requests the pure ASGI proxy layer answers, and how they are named and refused."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from conftest import GatewayFactory
from gw_servers import ThreadedServer
from gw_upstream import Probe

Clients = Callable[[ThreadedServer], httpx.AsyncClient]


async def test_proxied_requests_are_counted_under_their_route_prefix(
    make_gateway: GatewayFactory, client_of: Clients
) -> None:
    client = client_of(make_gateway())
    assert (await client.get("/test/echo")).status_code == 200
    scraped = (await client.get("/metrics")).text
    assert 'http_requests_total{method="GET",route="/test/{path:path}",status="200"}' in scraped


async def test_the_gateway_s_own_routes_are_not_proxied(
    make_gateway: GatewayFactory, client_of: Clients, probe: Probe
) -> None:
    client = client_of(make_gateway())
    assert (await client.get("/api/session")).status_code == 200
    assert (await client.get("/.well-known/jwks.json")).json()["keys"]
    assert probe.requests == []


async def test_a_method_the_proxy_does_not_carry_is_refused_before_any_upstream_call(
    make_gateway: GatewayFactory, client_of: Clients, probe: Probe
) -> None:
    client = client_of(make_gateway())
    response = await client.request("TRACE", "/test/echo")
    assert response.status_code == 405
    assert "TRACE is not proxied" in response.json()["detail"]
    assert "GET" in response.headers["allow"]
    assert probe.requests == []


async def test_an_unrouted_path_is_a_404_in_the_wire_format_of_its_prefix(
    make_gateway: GatewayFactory, client_of: Clients
) -> None:
    client = client_of(make_gateway())
    response = await client.get("/nowhere/at/all")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert "no route for /nowhere/at/all" in response.json()["detail"]
