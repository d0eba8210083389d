"""The principal + claims model and the FastAPI identity dependencies (security/identity.py)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from servicekit.errors import ExtractError
from servicekit.security import (
    Identity,
    IdentityVerifier,
    JWKSet,
    SigningKey,
    check_principal,
    current_identity,
    issue_identity_token,
    optional_identity,
    write_jwks,
)


def test_claims_always_hold_the_principal_and_the_anonymous_group() -> None:
    identity = Identity("user/jane", frozenset({"group/hydrology"}))
    assert identity.claims == {"user/jane", "group/hydrology", "group/extract-anon"}


def test_anonymous_is_the_anonymous_group_alone() -> None:
    anonymous = Identity.anonymous()
    assert (anonymous.principal, anonymous.claims) == (
        "group/extract-anon",
        {"group/extract-anon"},
    )
    assert not anonymous.is_admin


def test_the_admin_group_makes_an_admin() -> None:
    assert Identity("user/root", frozenset({"group/extract-admin"})).is_admin
    assert not Identity("user/jane", frozenset({"group/extract-admins"})).is_admin


@pytest.mark.parametrize(
    "principal",
    [
        "user/jane",
        "group/extract-admin",
        "session/3f2a9c4e-8d1b-4c55-9a0e-2b7f1d6e0c11",
        "credential/api-key-17",
        "user/jane@example.org",
    ],
)
def test_principals_of_every_kind_are_accepted(principal: str) -> None:
    assert Identity(principal).principal == principal


@pytest.mark.parametrize(
    "principal",
    ["", "jane", "user/", "user/jane doe", "user/ jane", "robot/r2", "user/a/b", "user/tab\t"],
)
def test_malformed_principals_are_refused(principal: str) -> None:
    with pytest.raises(ValueError, match="invalid principal"):
        Identity(principal)


def test_check_principal_is_the_same_rule_on_its_own() -> None:
    check_principal("group/hydrology")
    with pytest.raises(ValueError, match="invalid principal 'group/hydro logy'"):
        check_principal("group/hydro logy")


def test_a_malformed_claim_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid principal 'group/'"):
        Identity("user/jane", frozenset({"group/"}))


def test_an_identity_cannot_be_changed() -> None:
    identity = Identity("user/jane")
    with pytest.raises(dataclasses.FrozenInstanceError):
        identity.principal = "user/root"  # type: ignore[misc]


# The FastAPI dependencies, through a real app


def make_app(verifier: IdentityVerifier | None) -> FastAPI:
    app = FastAPI()
    if verifier is not None:
        app.state.identity_verifier = verifier

    @app.exception_handler(ExtractError)
    async def extract_error(request: Request, exc: ExtractError) -> JSONResponse:
        body = {"status": exc.status, "message": exc.message}
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    @app.get("/me")
    async def me(identity: Identity = Depends(current_identity)) -> dict[str, object]:
        return {"principal": identity.principal, "claims": sorted(identity.claims)}

    @app.get("/maybe")
    async def maybe(identity: Identity = Depends(optional_identity)) -> dict[str, object]:
        return {"principal": identity.principal}

    return app


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
async def client(key: SigningKey) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(IdentityVerifier(JWKSet.of(key)))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_valid_token_names_the_caller(client: httpx.AsyncClient, key: SigningKey) -> None:
    token = issue_identity_token(key, "user/jane", ["group/hydrology"])
    response = await client.get("/me", headers=bearer(token))
    assert response.status_code == 200
    assert response.json() == {
        "principal": "user/jane",
        "claims": ["group/extract-anon", "group/hydrology", "user/jane"],
    }


async def test_no_token_is_401_with_a_bare_challenge(client: httpx.AsyncClient) -> None:
    response = await client.get("/me")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "missing bearer token" in response.json()["message"]


async def test_an_expired_token_is_401_saying_so(
    client: httpx.AsyncClient, key: SigningKey
) -> None:
    token = issue_identity_token(key, "user/jane", ttl=60, now=1_780_000_000)
    response = await client.get("/me", headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["message"] == "token expired at 2026-05-28T20:27:40+00:00"
    assert response.headers["WWW-Authenticate"] == (
        'Bearer error="invalid_token", '
        'error_description="token expired at 2026-05-28T20:27:40+00:00"'
    )


async def test_a_token_of_an_unknown_key_is_401(client: httpx.AsyncClient) -> None:
    token = issue_identity_token(SigningKey.generate("elsewhere"), "user/jane")
    response = await client.get("/me", headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["message"] == "token signed by unknown key id 'elsewhere'"


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        ("Basic dXNlcjpwYXNz", "Authorization header uses scheme 'Basic'; expected Bearer"),
        ("Bearer", "Authorization header has the Bearer scheme but no token"),
        ("Bearer not-a-jwt", "malformed token: Not enough segments"),
    ],
)
async def test_a_bad_authorization_header_is_401(
    client: httpx.AsyncClient, authorization: str, message: str
) -> None:
    response = await client.get("/me", headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.json()["message"] == message
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


async def test_token_contents_cannot_break_the_challenge_header(
    client: httpx.AsyncClient, key: SigningKey
) -> None:
    token = issue_identity_token(key, "user/jane", issuer='évil", realm="x\\\r\n')
    response = await client.get("/me", headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["message"].startswith("token issued by 'évil\", realm=")
    assert re.fullmatch(
        r'Bearer error="invalid_token", error_description="[\x20\x21\x23-\x5b\x5d-\x7e]*"',
        response.headers["WWW-Authenticate"],
    )


async def test_the_bearer_scheme_is_case_insensitive(
    client: httpx.AsyncClient, key: SigningKey
) -> None:
    token = issue_identity_token(key, "user/jane")
    response = await client.get("/me", headers={"Authorization": f"bearer {token}"})
    assert response.status_code == 200


async def test_optional_identity_without_a_header_is_anonymous(client: httpx.AsyncClient) -> None:
    response = await client.get("/maybe")
    assert response.status_code == 200
    assert response.json() == {"principal": "group/extract-anon"}


async def test_optional_identity_with_a_token_names_the_caller(
    client: httpx.AsyncClient, key: SigningKey
) -> None:
    response = await client.get("/maybe", headers=bearer(issue_identity_token(key, "group/ops")))
    assert response.json() == {"principal": "group/ops"}


async def test_optional_identity_with_a_bad_token_is_still_401(
    client: httpx.AsyncClient, key: SigningKey
) -> None:
    forged = SigningKey(SigningKey.generate().private_key, kid=key.kid)
    response = await client.get("/maybe", headers=bearer(issue_identity_token(forged, "user/x")))
    assert response.status_code == 401
    assert response.json()["message"] == "signature does not verify"


async def test_an_app_without_a_verifier_fails_closed_with_500(key: SigningKey) -> None:
    transport = httpx.ASGITransport(app=make_app(None))
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        response = await client.get("/me", headers=bearer(issue_identity_token(key, "user/x")))
    assert response.status_code == 500
    assert "identity_verifier is not set" in response.json()["message"]


async def test_the_app_follows_a_key_rotation(tmp_path: Path, key: SigningKey) -> None:
    location = tmp_path / "jwks.json"
    write_jwks(location, [key])
    app = make_app(IdentityVerifier(str(location)))
    rotated = SigningKey.generate()
    write_jwks(location, [key, rotated])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        token = issue_identity_token(rotated, "user/jane")
        response = await client.get("/me", headers=bearer(token))
    assert response.status_code == 200
