"""ES256 identity tokens and the verifier following key rotation (security/tokens.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from servicekit.errors import Unauthorized
from servicekit.security import (
    DEFAULT_ISSUER,
    Identity,
    IdentityVerifier,
    JWKSet,
    SigningKey,
    issue_identity_token,
    verify_identity_token,
    write_jwks,
)

NOW = 1_780_000_000.0  # 2026-05-28T20:26:40Z


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(value: dict[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode())


def _decode_segment(segment: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def _claims(**overrides: Any) -> dict[str, Any]:
    claims = {
        "iss": DEFAULT_ISSUER,
        "sub": "user/jane",
        "claims": ["user/jane", "group/extract-anon"],
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 300,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(key: SigningKey, payload: dict[str, Any]) -> str:
    return jwt.encode(payload, key.private_key, algorithm="ES256", headers={"kid": key.kid})


def _verify(token: str, jwks: JWKSet, *, now: float = NOW, **options: Any) -> Identity:
    options.setdefault("issuer", DEFAULT_ISSUER)
    return verify_identity_token(token, jwks, now=now, **options)


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def jwks(key: SigningKey) -> JWKSet:
    return JWKSet.of(key)


def _refused(token: str, jwks: JWKSet, message: str, **options: Any) -> Unauthorized:
    with pytest.raises(Unauthorized) as refused:
        _verify(token, jwks, **options)
    assert refused.value.message == message
    challenge = refused.value.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer error="invalid_token", error_description="')
    return refused.value


def test_a_token_names_the_principal_and_its_claims(key: SigningKey, jwks: JWKSet) -> None:
    token = issue_identity_token(key, "user/jane", ["group/hydrology"], now=NOW)
    identity = _verify(token, jwks)
    assert identity.principal == "user/jane"
    assert identity.claims == {"user/jane", "group/hydrology", "group/extract-anon"}


def test_a_token_carries_kid_and_the_standard_claims(key: SigningKey) -> None:
    token = issue_identity_token(key, "user/jane", ["group/a"], ttl=60, audience="catalog", now=NOW)
    header, payload, _ = token.split(".")
    assert _decode_segment(header) == {"alg": "ES256", "kid": key.kid, "typ": "JWT"}
    claims = _decode_segment(payload)
    assert claims.pop("jti")
    assert claims == {
        "iss": "extract-gateway",
        "sub": "user/jane",
        "aud": "catalog",
        "claims": ["group/a", "group/extract-anon", "user/jane"],
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 60,
    }


def test_every_token_has_its_own_jti(key: SigningKey) -> None:
    tokens = [issue_identity_token(key, "user/jane", now=NOW) for _ in range(2)]
    assert len({_decode_segment(t.split(".")[1])["jti"] for t in tokens}) == 2


@pytest.mark.parametrize("ttl", [0, -1])
def test_issue_refuses_a_non_positive_ttl(key: SigningKey, ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl must be positive"):
        issue_identity_token(key, "user/jane", ttl=ttl)


def test_issue_refuses_an_invalid_principal(key: SigningKey) -> None:
    with pytest.raises(ValueError, match="invalid principal 'jane'"):
        issue_identity_token(key, "jane")


def test_a_token_within_its_lifetime_is_accepted_by_default_clock(
    key: SigningKey, jwks: JWKSet
) -> None:
    token = issue_identity_token(key, "user/jane")
    assert verify_identity_token(token, jwks, issuer=DEFAULT_ISSUER).principal == "user/jane"


def test_an_expired_token_is_refused_with_its_expiry(key: SigningKey, jwks: JWKSet) -> None:
    token = issue_identity_token(key, "user/jane", ttl=300, now=NOW)
    _refused(token, jwks, "token expired at 2026-05-28T20:31:40+00:00", now=NOW + 306)


def test_expiry_allows_the_leeway(key: SigningKey, jwks: JWKSet) -> None:
    token = issue_identity_token(key, "user/jane", ttl=300, now=NOW)
    assert _verify(token, jwks, now=NOW + 304, leeway=5).principal == "user/jane"
    _refused(token, jwks, "token expired at 2026-05-28T20:31:40+00:00", now=NOW + 304, leeway=0)


def test_a_token_not_yet_valid_is_refused(key: SigningKey, jwks: JWKSet) -> None:
    token = issue_identity_token(key, "user/jane", now=NOW)
    _refused(token, jwks, "token not valid before 2026-05-28T20:26:40+00:00", now=NOW - 60)


def test_a_token_issued_in_the_future_is_refused(key: SigningKey, jwks: JWKSet) -> None:
    token = _signed(key, _claims(iat=int(NOW) + 120, nbf=int(NOW) - 10))
    _refused(token, jwks, "token issued in the future, at 2026-05-28T20:28:40+00:00")


def test_an_absurd_not_before_is_reported_in_seconds(key: SigningKey, jwks: JWKSet) -> None:
    token = _signed(key, _claims(nbf=1e300))
    _refused(token, jwks, "token not valid before 1e+300 seconds after the epoch")


@pytest.mark.parametrize("value", [float("nan"), "1780000300", True])
def test_a_non_numeric_expiry_is_refused(key: SigningKey, jwks: JWKSet, value: object) -> None:
    token = _signed(key, _claims(exp=value))
    _refused(token, jwks, "token claim 'exp' is not a finite number of seconds")


@pytest.mark.parametrize("claim", ["iss", "sub", "iat", "nbf", "exp"])
def test_a_token_lacking_a_required_claim_is_refused(
    key: SigningKey, jwks: JWKSet, claim: str
) -> None:
    token = _signed(key, _claims(**{claim: None}))
    _refused(token, jwks, f"token lacks the {claim!r} claim")


def test_a_token_from_another_issuer_is_refused(key: SigningKey, jwks: JWKSet) -> None:
    token = issue_identity_token(key, "user/jane", issuer="someone-else", now=NOW)
    _refused(token, jwks, "token issued by 'someone-else', expected 'extract-gateway'")


def test_a_token_for_this_audience_is_accepted(key: SigningKey, jwks: JWKSet) -> None:
    token = _signed(key, _claims(aud=["scheduler", "catalog"]))
    assert _verify(token, jwks, audience="catalog").principal == "user/jane"


@pytest.mark.parametrize(
    ("aud", "audience", "message"),
    [
        ("scheduler", "catalog", "token is for audience 'scheduler', not 'catalog'"),
        (None, "catalog", "token has no audience, expected 'catalog'"),
        ("catalog", None, "token is restricted to audience 'catalog'; this service has none"),
        (7, "catalog", "token claim 'aud' must be a string or a list of strings"),
    ],
)
def test_a_token_for_another_audience_is_refused(
    key: SigningKey, jwks: JWKSet, aud: object, audience: str | None, message: str
) -> None:
    _refused(_signed(key, _claims(aud=aud)), jwks, message, audience=audience)


def test_a_token_signed_by_another_key_under_a_known_kid_is_refused(
    key: SigningKey, jwks: JWKSet
) -> None:
    impostor = SigningKey(SigningKey.generate().private_key, kid=key.kid)
    token = issue_identity_token(impostor, "user/jane", now=NOW)
    _refused(token, jwks, "signature does not verify")


def test_a_token_signed_by_an_unknown_kid_is_refused(jwks: JWKSet) -> None:
    token = issue_identity_token(SigningKey.generate("stranger"), "user/jane", now=NOW)
    _refused(token, jwks, "token signed by unknown key id 'stranger'")


def test_a_token_without_kid_is_refused(key: SigningKey, jwks: JWKSet) -> None:
    token = jwt.encode(_claims(), key.private_key, algorithm="ES256")
    _refused(token, jwks, "token has no key id ('kid') in its header")


def test_a_tampered_payload_is_refused(key: SigningKey, jwks: JWKSet) -> None:
    header, payload, signature = issue_identity_token(key, "user/jane", now=NOW).split(".")
    claims = _decode_segment(payload)
    claims["claims"].append("group/extract-admin")
    tampered = f"{header}.{_segment(claims)}.{signature}"
    _refused(tampered, jwks, "signature does not verify")


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "....", "eyJhbGciOiJFUzI1NiJ9.e30"])
def test_a_malformed_token_is_refused(jwks: JWKSet, token: str) -> None:
    with pytest.raises(Unauthorized, match="malformed token"):
        _verify(token, jwks)


def test_a_token_with_alg_none_is_refused(key: SigningKey, jwks: JWKSet) -> None:
    token = f"{_segment({'alg': 'none', 'kid': key.kid})}.{_segment(_claims())}."
    _refused(token, jwks, "token algorithm 'none' is not accepted; only ES256 is")


def test_hs256_keyed_with_the_public_key_is_refused(key: SigningKey, jwks: JWKSet) -> None:
    # The classic confusion: a verifier that lets the header pick the algorithm would check
    # this HMAC with the (public) verification key as the secret, and accept it.
    public_pem = key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{_segment({'alg': 'HS256', 'kid': key.kid})}.{_segment(_claims())}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{_b64url(mac)}"
    _refused(token, jwks, "token algorithm 'HS256' is not accepted; only ES256 is")


def test_rs256_under_a_known_kid_is_refused(key: SigningKey, jwks: JWKSet) -> None:
    rsa_key = rsa.generate_private_key(65537, 2048)
    token = jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": key.kid})
    _refused(token, jwks, "token algorithm 'RS256' is not accepted; only ES256 is")


def test_a_token_with_an_invalid_subject_is_refused(key: SigningKey, jwks: JWKSet) -> None:
    token = _signed(key, _claims(sub="user/jane doe"))
    message = (
        "token names invalid principal 'user/jane doe': expected one of user/<name>, "
        "group/<name>, session/<name>, credential/<name>, with a non-empty name without "
        "spaces or '/'"
    )
    refused = _refused(token, jwks, message)
    # The header value must stay valid HTTP: no raw double quotes from the message.
    assert refused.headers["WWW-Authenticate"].count('"') == 4


@pytest.mark.parametrize("claims", ["group/a", [1, 2]])
def test_claims_that_are_not_a_list_of_strings_are_refused(
    key: SigningKey, jwks: JWKSet, claims: object
) -> None:
    token = _signed(key, _claims(claims=claims))
    _refused(token, jwks, "token claim 'claims' must be a list of strings")


# The verifier


def test_verifier_with_a_fixed_set_verifies(key: SigningKey, jwks: JWKSet) -> None:
    verifier = IdentityVerifier(jwks)
    assert verifier.verify(issue_identity_token(key, "user/jane")).principal == "user/jane"


def test_verifier_checks_issuer_and_audience(key: SigningKey, jwks: JWKSet) -> None:
    verifier = IdentityVerifier(jwks, issuer="gw", audience="catalog")
    token = issue_identity_token(key, "user/jane", issuer="gw", audience="catalog")
    assert verifier.verify(token).principal == "user/jane"
    with pytest.raises(Unauthorized, match="not 'catalog'"):
        verifier.verify(issue_identity_token(key, "user/jane", issuer="gw", audience="twin"))


def test_verifier_follows_a_key_rotation_in_its_file(tmp_path: Path, key: SigningKey) -> None:
    location = tmp_path / "jwks.json"
    write_jwks(location, [key])
    verifier = IdentityVerifier(str(location))
    rotated = SigningKey.generate()
    write_jwks(location, [key, rotated])
    assert verifier.verify(issue_identity_token(rotated, "user/jane")).principal == "user/jane"
    assert verifier.jwks.kids == {key.kid, rotated.kid}


class SteppedClock:
    """A monotonic clock the test moves by hand, to cross the refresh interval without sleeping."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_verifier_refreshes_at_most_once_per_interval(tmp_path: Path, key: SigningKey) -> None:
    location = tmp_path / "jwks.json"
    write_jwks(location, [key])
    clock = SteppedClock()
    verifier = IdentityVerifier(str(location), min_refresh_interval=30, clock=clock)
    # A forged kid costs one refresh ...
    with pytest.raises(Unauthorized, match="unknown key id 'forged'"):
        verifier.verify(issue_identity_token(SigningKey.generate("forged"), "user/jane"))
    # ... after which a real rotation within the interval is not seen yet ...
    rotated = SigningKey.generate()
    write_jwks(location, [key, rotated])
    token = issue_identity_token(rotated, "user/jane")
    clock.now = 29
    with pytest.raises(Unauthorized, match="unknown key id"):
        verifier.verify(token)
    # ... and is once the interval has passed.
    clock.now = 30
    assert verifier.verify(token).principal == "user/jane"


def test_verifier_keeps_its_keys_when_the_source_breaks(tmp_path: Path, key: SigningKey) -> None:
    location = tmp_path / "jwks.json"
    write_jwks(location, [key])
    verifier = IdentityVerifier(str(location))
    location.write_text("{broken")
    with pytest.raises(Unauthorized, match="unknown key id 'new'"):
        verifier.verify(issue_identity_token(SigningKey.generate("new"), "user/jane"))
    assert verifier.verify(issue_identity_token(key, "user/jane")).principal == "user/jane"


def test_verifier_refresh_rereads_the_location(tmp_path: Path, key: SigningKey) -> None:
    location = tmp_path / "jwks.json"
    write_jwks(location, [key])
    verifier = IdentityVerifier(str(location))
    replacement = SigningKey.generate()
    write_jwks(location, [replacement])
    verifier.refresh()
    assert verifier.jwks.kids == {replacement.kid}


def test_verifier_refuses_to_start_without_its_keys(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        IdentityVerifier(str(tmp_path / "missing.json"))


async def test_verify_async_follows_a_rotation(tmp_path: Path, key: SigningKey) -> None:
    location = tmp_path / "jwks.json"
    write_jwks(location, [key])
    verifier = IdentityVerifier(str(location))
    rotated = SigningKey.generate()
    write_jwks(location, [rotated])
    identity = await verifier.verify_async(issue_identity_token(rotated, "group/ops"))
    assert identity.principal == "group/ops"


# The verifier's memory of verified tokens


def test_verifier_refuses_a_remembered_token_once_it_expires(key: SigningKey, jwks: JWKSet) -> None:
    clock = SteppedClock()
    clock.now = NOW
    verifier = IdentityVerifier(jwks, leeway=5, wall_clock=clock)
    token = issue_identity_token(key, "user/jane", ttl=60, now=NOW)
    assert verifier.verify(token).principal == "user/jane"
    clock.now = NOW + 64
    assert verifier.verify(token).principal == "user/jane"  # within the leeway
    clock.now = NOW + 65
    with pytest.raises(Unauthorized, match="token expired"):
        verifier.verify(token)


def test_verifier_refuses_a_tampered_copy_of_a_remembered_token(
    key: SigningKey, jwks: JWKSet
) -> None:
    verifier = IdentityVerifier(jwks)
    token = issue_identity_token(key, "user/jane")
    assert verifier.verify(token).principal == "user/jane"
    header, payload, signature = token.split(".")
    claims = _decode_segment(payload) | {"sub": "user/admin", "claims": ["group/extract-admin"]}
    with pytest.raises(Unauthorized, match="signature does not verify"):
        verifier.verify(f"{header}.{_segment(claims)}.{signature}")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    with pytest.raises(Unauthorized):
        verifier.verify(f"{header}.{payload}.{flipped}")


def test_verifier_forgets_remembered_tokens_when_their_key_leaves_the_set(
    tmp_path: Path, key: SigningKey
) -> None:
    location = tmp_path / "jwks.json"
    write_jwks(location, [key])
    verifier = IdentityVerifier(str(location))
    token = issue_identity_token(key, "user/jane")
    assert verifier.verify(token).principal == "user/jane"
    rotated = SigningKey.generate()
    write_jwks(location, [rotated])  # `key` revoked
    assert verifier.verify(issue_identity_token(rotated, "user/joe")).principal == "user/joe"
    with pytest.raises(Unauthorized, match="unknown key id"):
        verifier.verify(token)


def test_verifier_remembers_a_bounded_number_of_tokens(key: SigningKey, jwks: JWKSet) -> None:
    clock = SteppedClock()
    clock.now = NOW
    verifier = IdentityVerifier(jwks, cache_size=2, wall_clock=clock)
    tokens = [issue_identity_token(key, f"user/u{n}", ttl=60, now=NOW) for n in range(3)]
    for token in tokens:
        verifier.verify(token)
    # Only a token verified anew is checked against the time: the oldest one was forgotten.
    clock.now = NOW - 3600
    with pytest.raises(Unauthorized, match="not valid before"):
        verifier.verify(tokens[0])
    assert verifier.verify(tokens[2]).principal == "user/u2"
