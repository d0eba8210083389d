"""ES256 bearer tokens from an external issuer, verified against its JWKS."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import jwt
from conftest import GatewayFactory
from cryptography.hazmat.primitives.asymmetric import rsa
from gw_servers import ThreadedServer
from jwt.algorithms import RSAAlgorithm

from servicekit.security import (
    JWKSet,
    SigningKey,
    issue_identity_token,
    verify_identity_token,
    write_jwks,
)

Clients = Callable[[ThreadedServer], httpx.AsyncClient]
ISSUER = "https://idp.example.org"


async def test_external_bearer_token_names_the_caller_upstream(
    make_gateway: GatewayFactory, client_of: Clients, identity_key: SigningKey, tmp_path: Path
) -> None:
    idp_key, stranger = SigningKey.generate(), SigningKey.generate()
    jwks = tmp_path / "idp.jwks.json"
    write_jwks(jwks, [idp_key])
    client = client_of(make_gateway(oidc_jwks_url=str(jwks), oidc_issuer=ISSUER))

    token = issue_identity_token(idp_key, "user/carol", ["group/rescue"], issuer=ISSUER)
    response = await client.get("/test/echo", headers={"authorization": f"Bearer {token}"})
    [upstream_token] = [v for k, v in response.json()["headers"] if k == "authorization"]
    identity = verify_identity_token(
        upstream_token.removeprefix("Bearer "), JWKSet.of(identity_key), issuer="extract-gateway"
    )
    assert identity.principal == "user/carol"
    assert "group/rescue" in identity.claims
    assert upstream_token != f"Bearer {token}"

    forged = issue_identity_token(stranger, "user/carol", issuer=ISSUER)
    refused = await client.get("/test/echo", headers={"authorization": f"Bearer {forged}"})
    assert refused.status_code == 401
    assert "unknown key id" in refused.json()["detail"]

    expired = issue_identity_token(idp_key, "user/carol", issuer=ISSUER, ttl=1, now=1_000_000)
    late = await client.get("/test/echo", headers={"authorization": f"Bearer {expired}"})
    assert late.status_code == 401
    assert "expired" in late.json()["detail"]


async def test_a_keycloak_style_token_becomes_user_and_groups(
    make_gateway: GatewayFactory, client_of: Clients, identity_key: SigningKey, tmp_path: Path
) -> None:
    idp_key = SigningKey.generate()
    rsa_jwk = json.loads(RSAAlgorithm.to_jwk(rsa.generate_private_key(65537, 2048).public_key()))
    jwks = tmp_path / "keycloak.jwks.json"
    jwks.write_text(
        json.dumps({"keys": [{**rsa_jwk, "kid": "rsa", "alg": "RS256"}, idp_key.public_jwk()]})
    )
    gateway = make_gateway(oidc_jwks_url=str(jwks), oidc_issuer=ISSUER, oidc_audience="extract")
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": "extract",
        "sub": "9b2c6a1e-0d3f-4a53-9f4e-2f1c1d7a5b10",
        "preferred_username": "dora",
        "groups": ["/rescue", "venice"],
        "iat": now,
        "exp": now + 300,
    }
    token = jwt.encode(claims, idp_key.private_key, algorithm="ES256", headers={"kid": idp_key.kid})
    response = await client_of(gateway).get(
        "/test/echo", headers={"authorization": f"Bearer {token}"}
    )
    [upstream_token] = [v for k, v in response.json()["headers"] if k == "authorization"]
    identity = verify_identity_token(
        upstream_token.removeprefix("Bearer "), JWKSet.of(identity_key), issuer="extract-gateway"
    )
    assert identity.principal == "user/dora"
    assert {"group/rescue", "group/venice"} <= identity.claims

    other_audience = jwt.encode(
        {**claims, "aud": "someone-else"},
        idp_key.private_key,
        algorithm="ES256",
        headers={"kid": idp_key.kid},
    )
    refused = await client_of(gateway).get(
        "/test/echo", headers={"authorization": f"Bearer {other_audience}"}
    )
    assert refused.status_code == 401
    assert "audience" in refused.json()["detail"].lower()
