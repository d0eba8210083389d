"""Signed critical payloads: responses verify against the gateway's JWKS (and a tampered body
does not); critical requests need a fresh, unreplayed signature from a registered device."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import httpx
import pytest
from conftest import GatewayFactory
from gw_servers import ThreadedServer
from gw_upstream import Probe

from gateway.signing import sign_device_request
from servicekit.errors import Unauthorized
from servicekit.security import JWKSet, SigningKey, verify_detached

Clients = Callable[[ThreadedServer], httpx.AsyncClient]
LOCATION = b'{"lat": 45.4408, "lon": 12.3155, "profile": "wheelchair"}'
PATH = "/evacuation/location"


@pytest.fixture
def gateway(make_gateway: GatewayFactory, upstream: ThreadedServer) -> ThreadedServer:
    return make_gateway(semantic_url=upstream.url, admin_password="pw")


async def _registered_device(client: httpx.AsyncClient) -> SigningKey:
    login = await client.post(
        "/api/session",
        json={
            "template": {"href": "session-template/password", "username": "admin", "password": "pw"}
        },
    )
    assert login.status_code == 201
    device = SigningKey.generate()
    registered = await client.post("/api/device-key", json={"jwk": device.public_jwk()})
    assert registered.status_code == 201, registered.text
    assert registered.json()["resource-id"] == f"device-key/{device.kid}"
    return device


async def _post(client: httpx.AsyncClient, signature: str | None, body: bytes = LOCATION):
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers["x-device-signature"] = signature
    return await client.post(PATH, content=body, headers=headers)


async def test_critical_response_verifies_against_the_jwks_and_a_tampered_one_does_not(
    gateway: ThreadedServer, client_of: Clients
) -> None:
    client = client_of(gateway)
    jwks = JWKSet.from_json((await client.get("/.well-known/jwks.json")).content)
    response = await client.get("/evacuation/routes", params={"from": "san-marco"})
    assert response.status_code == 200
    signature = response.headers["x-jws-signature"]
    header = verify_detached(response.content, signature, jwks)
    assert header["alg"] == "ES256"
    tampered = response.content.replace(b"north-east", b"south-west")
    with pytest.raises(Unauthorized, match="does not verify"):
        verify_detached(tampered, signature, jwks)


async def test_signed_location_from_a_registered_device_is_accepted(
    gateway: ThreadedServer, client_of: Clients
) -> None:
    client = client_of(gateway)
    device = await _registered_device(client)
    response = await _post(client, sign_device_request(device, "POST", PATH, LOCATION))
    assert response.status_code == 200
    assert response.json()["received_sha256"] == hashlib.sha256(LOCATION).hexdigest()
    assert "x-jws-signature" in response.headers


async def test_missing_signature_is_refused_with_the_reason(
    gateway: ThreadedServer, client_of: Clients, probe: Probe
) -> None:
    response = await _post(client_of(gateway), None)
    assert response.status_code == 401
    assert "missing device signature" in response.json()["detail"]
    assert probe.requests == []


async def test_expired_signature_is_refused(gateway: ThreadedServer, client_of: Clients) -> None:
    client = client_of(gateway)
    device = await _registered_device(client)
    old = sign_device_request(device, "POST", PATH, LOCATION, now=time.time() - 600)
    response = await _post(client, old)
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


async def test_replayed_signature_is_refused(gateway: ThreadedServer, client_of: Clients) -> None:
    client = client_of(gateway)
    device = await _registered_device(client)
    signature = sign_device_request(device, "POST", PATH, LOCATION)
    assert (await _post(client, signature)).status_code == 200
    replay = await _post(client, signature)
    assert replay.status_code == 401
    assert "replayed" in replay.json()["detail"]


async def test_wrong_key_signature_is_refused(gateway: ThreadedServer, client_of: Clients) -> None:
    client = client_of(gateway)
    device = await _registered_device(client)
    impostor = SigningKey(SigningKey.generate().private_key, kid=device.kid)
    response = await _post(client, sign_device_request(impostor, "POST", PATH, LOCATION))
    assert response.status_code == 401
    assert "does not verify" in response.json()["detail"]
    unregistered = await _post(
        client, sign_device_request(SigningKey.generate(), "POST", PATH, LOCATION)
    )
    assert unregistered.status_code == 401
    assert "no registered device key" in unregistered.json()["detail"]


async def test_tampered_or_moved_request_is_refused(
    gateway: ThreadedServer, client_of: Clients
) -> None:
    client = client_of(gateway)
    device = await _registered_device(client)
    signature = sign_device_request(device, "POST", PATH, LOCATION)
    tampered = await _post(client, signature, LOCATION.replace(b"45.44", b"45.43"))
    assert tampered.status_code == 401
    moved = sign_device_request(device, "POST", "/evacuation/other", LOCATION)
    response = await _post(client, moved)
    assert response.status_code == 401
    assert "not POST /evacuation/location" in response.json()["detail"]


async def test_a_device_key_signs_only_for_the_principal_that_registered_it(
    gateway: ThreadedServer, client_of: Clients, probe: Probe
) -> None:
    device = await _registered_device(client_of(gateway))  # registered by user/admin
    stranger = client_of(gateway)  # no session: anonymous
    response = await _post(stranger, sign_device_request(device, "POST", PATH, LOCATION))
    assert response.status_code == 401
    detail = response.json()["detail"]
    assert f"device-key/{device.kid} is registered to user/admin" in detail
    assert "group/extract-anon" in detail
    assert probe.requests == []
