"""The streaming reverse proxy against a real upstream, through a real TLS gateway."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import GatewayFactory
from gw_servers import ThreadedServer, serving
from gw_upstream import CHUNK, Probe, pattern, upstream_app

from servicekit.infra.ports import free_port
from servicekit.security import JWKSet, SigningKey, verify_identity_token
from servicekit.testing import eventually
from servicekit.upstream_http import ConnectionPool

MiB = 1024 * 1024
Clients = Callable[[ThreadedServer], httpx.AsyncClient]


def _headers(response: httpx.Response) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        seen.setdefault(name, []).append(value)
    return seen


async def test_prefix_is_routed_to_its_upstream_and_stripped(
    make_gateway: GatewayFactory, client_of: Clients
) -> None:
    client = client_of(make_gateway())
    response = await client.get("/test/echo", params={"q": "a b", "n": "1"})
    assert response.status_code == 200
    assert response.json()["path"] == "/echo"
    assert response.json()["query"] == "q=a+b&n=1"


async def test_upstream_sees_a_fresh_identity_token_and_no_client_identity_headers(
    make_gateway: GatewayFactory, client_of: Clients, identity_key: SigningKey
) -> None:
    client = client_of(make_gateway())
    response = await client.get(
        "/test/echo",
        headers={
            "nuvla-authn-info": "admin group/extract-admin",
            "x-extract-identity": "user/admin",
            "x-forwarded-for": "6.6.6.6",
            "connection": "x-hop",
            "x-hop": "secret",
            "cookie": "com.sixsq.nuvla.cookie=abc; other=1",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        },
    )
    seen = _headers(response)
    assert "nuvla-authn-info" not in seen
    assert "x-extract-identity" not in seen
    assert "x-hop" not in seen
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["https"]
    assert seen["cookie"] == ["other=1"]
    assert seen["traceparent"][0].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    [authorization] = seen["authorization"]
    token = authorization.removeprefix("Bearer ")
    identity = verify_identity_token(token, JWKSet.of(identity_key), issuer="extract-gateway")
    assert identity.principal == "group/extract-anon"


async def test_a_bearer_token_from_no_trusted_issuer_is_refused_before_any_upstream_call(
    make_gateway: GatewayFactory, client_of: Clients, probe: Probe
) -> None:
    client = client_of(make_gateway())
    response = await client.get("/test/echo", headers={"authorization": "Bearer forged"})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert probe.requests == []


async def test_large_upload_streams_to_the_upstream_before_the_client_has_sent_it_all(
    make_gateway: GatewayFactory, client_of: Clients, probe: Probe
) -> None:
    client = client_of(make_gateway())
    data = pattern(48 * MiB)

    async def body() -> AsyncIterator[bytes]:
        yield data[:CHUNK]
        # A buffering proxy would wait for the whole body: the upstream would never see this.
        assert await asyncio.to_thread(probe.first_chunk_arrived.wait, 20)
        for start in range(CHUNK, len(data), CHUNK):
            yield data[start : start + CHUNK]

    response = await client.post("/test/upload", content=body())
    assert response.status_code == 200
    assert response.json() == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


async def test_large_download_reaches_the_client_before_the_upstream_has_sent_it_all(
    make_gateway: GatewayFactory, client_of: Clients, probe: Probe
) -> None:
    client = client_of(make_gateway())
    size = 48 * MiB
    digest = hashlib.sha256()
    async with client.stream("GET", "/test/download", params={"size": size, "wait": 1}) as r:
        assert r.status_code == 200
        async for chunk in r.aiter_raw():
            digest.update(chunk)
            probe.client_got_first_chunk.set()
    assert digest.hexdigest() == hashlib.sha256(pattern(size)).hexdigest()


async def test_download_keeps_the_upstream_content_length(
    make_gateway: GatewayFactory, client_of: Clients
) -> None:
    client = client_of(make_gateway())
    response = await client.get("/test/download", params={"size": 3 * MiB + 5})
    assert response.headers["content-length"] == str(3 * MiB + 5)
    assert response.content == pattern(3 * MiB + 5)


async def test_repeated_response_headers_are_all_passed_on(
    make_gateway: GatewayFactory, client_of: Clients
) -> None:
    response = await client_of(make_gateway()).get("/test/cookies")
    assert response.headers.get_list("set-cookie")[:2] == [
        "a=1; Path=/; SameSite=lax",
        "b=2; Path=/; SameSite=lax",
    ]


async def test_cookies_an_upstream_sets_are_never_replayed_for_other_callers(
    make_gateway: GatewayFactory, client_of: Clients
) -> None:
    gateway = make_gateway()
    assert (await client_of(gateway).get("/test/cookies")).status_code == 200
    echoed = (await client_of(gateway).get("/test/echo")).json()
    assert "cookie" not in dict(echoed["headers"])


async def test_slow_upstream_answers_504(make_gateway: GatewayFactory, client_of: Clients) -> None:
    client = client_of(make_gateway(read_timeout=0.3))
    response = await client.get("/test/slow", params={"seconds": 3})
    assert response.status_code == 504
    assert response.json()["code"] == "GatewayTimeout"


async def test_body_over_the_routes_cap_is_refused_413_by_its_declared_length(
    make_gateway: GatewayFactory, client_of: Clients, probe: Probe
) -> None:
    response = await client_of(make_gateway()).post("/small/upload", content=b"x" * 2048)
    assert response.status_code == 413
    assert not probe.first_chunk_arrived.is_set()


async def test_streamed_body_over_the_routes_cap_is_refused_413_while_it_streams(
    make_gateway: GatewayFactory, client_of: Clients
) -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b"x" * 512

    response = await client_of(make_gateway()).post("/small/upload", content=body())
    assert response.status_code == 413


async def test_unknown_path_is_404_and_unconfigured_upstream_503(
    make_gateway: GatewayFactory, client_of: Clients
) -> None:
    client = client_of(make_gateway())
    missing = await client.get("/nowhere")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    unconfigured = await client.post("/sparql", content=b"ASK {}")
    assert unconfigured.status_code == 503
    assert "semantic" in unconfigured.json()["detail"]


class FlakyPool(ConnectionPool):
    """The real network, except that new connections fail while `failures` is above zero;
    no connection is kept idle, so every request makes a new one."""

    connects = 0
    failures = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "keepalive": 0})

    async def connect(self) -> Any:
        FlakyPool.connects += 1
        if FlakyPool.failures > 0:
            FlakyPool.failures -= 1
            port, self.port = self.port, free_port()  # nobody listens there: a real refusal
            try:
                return await super().connect()
            finally:
                self.port = port
        return await super().connect()


async def _flaky_gateway(make_gateway: GatewayFactory, client_of: Clients) -> httpx.AsyncClient:
    FlakyPool.connects = FlakyPool.failures = 0
    client = client_of(make_gateway(pool=FlakyPool, health_interval=600))
    await eventually(lambda: FlakyPool.connects > 0, within=10)  # the first health check
    FlakyPool.failures = 1
    return client


async def test_idempotent_request_is_retried_after_a_connect_failure(
    make_gateway: GatewayFactory, client_of: Clients
) -> None:
    client = await _flaky_gateway(make_gateway, client_of)
    response = await client.put("/test/echo", content=b"same again")
    assert response.status_code == 200
    assert FlakyPool.failures == 0


async def test_post_is_not_retried(make_gateway: GatewayFactory, client_of: Clients) -> None:
    client = await _flaky_gateway(make_gateway, client_of)
    response = await client.post("/test/echo", content=b"only once")
    assert response.status_code == 502
    assert response.json()["code"] == "BadGateway"
    assert (await client.post("/test/echo", content=b"now")).status_code == 200


async def test_dead_upstream_trips_the_breaker_which_recovers_when_it_is_back(
    make_gateway: GatewayFactory, client_of: Clients, probe: Probe
) -> None:
    port = free_port()
    gateway = make_gateway(
        staging_url=f"http://127.0.0.1:{port}",
        retries=0,
        breaker_failures=3,
        breaker_reset=30,
        health_interval=0.1,
    )
    client = client_of(gateway)
    for _ in range(3):
        assert (await client.get("/test/echo")).status_code == 502
    refused = await client.get("/test/echo")
    assert refused.status_code == 503
    assert "circuit breaker" in refused.json()["detail"]
    assert int(refused.headers["retry-after"]) >= 1

    # Well before breaker_reset: the health check sees the upstream back and lets a trial through.
    with serving(upstream_app(probe), port=port):

        async def answers() -> bool:
            return (await client.get("/test/echo")).status_code == 200

        await eventually(answers, within=10)


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE", "PATCH"])
async def test_methods_pass_through(
    make_gateway: GatewayFactory, client_of: Clients, method: str
) -> None:
    response = await client_of(make_gateway()).request(method, "/test/echo")
    assert response.status_code == 200
    if method != "HEAD":
        assert response.json()["method"] == method


async def test_the_path_is_forwarded_as_the_client_encoded_it(
    make_gateway: GatewayFactory, client_of: Clients
) -> None:
    response = await client_of(make_gateway()).get("/test/raw/a%2Fb%20c")
    assert response.json()["raw_path"] == "/raw/a%2Fb%20c"


async def test_readyz_names_a_dead_upstream(
    make_gateway: GatewayFactory, client_of: Clients
) -> None:
    live = await client_of(make_gateway()).get("/readyz")
    assert live.status_code == 200
    assert live.json()["checks"]["staging"] == "ok"
    dead = await client_of(make_gateway(staging_url=f"http://127.0.0.1:{free_port()}")).get(
        "/readyz"
    )
    assert dead.status_code == 503
    assert dead.json()["checks"]["staging"].startswith("failed")


async def test_app_serves_the_mobile_clients_static_files(
    make_gateway: GatewayFactory, client_of: Clients, tmp_path: Path
) -> None:
    static = tmp_path / "mobile"
    static.mkdir()
    (static / "index.html").write_text("<h1>evacuation</h1>")
    client = client_of(make_gateway(static_dir=str(static)))
    response = await client.get("/app/")
    assert response.status_code == 200
    assert "evacuation" in response.text
    assert response.headers["x-content-type-options"] == "nosniff"
