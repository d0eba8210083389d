"""Detached ES256 JWS over payload bytes (security/jws.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re

import jwt
import pytest

from servicekit.errors import Unauthorized
from servicekit.security import JWKSet, SigningKey, sign_detached, verify_detached

PAYLOAD = json.dumps({"hazard": "flood", "instruction": "evacuate to higher ground"}).encode()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _decode_segment(segment: str) -> dict[str, object]:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def jwks(key: SigningKey) -> JWKSet:
    return JWKSet.of(key)


def _refused(payload: bytes, jws: str, jwks: JWKSet, message: str) -> None:
    with pytest.raises(Unauthorized) as refused:
        verify_detached(payload, jws, jwks)
    assert refused.value.message == message
    assert refused.value.status == 401


def test_a_detached_signature_verifies_and_returns_its_header(
    key: SigningKey, jwks: JWKSet
) -> None:
    jws = sign_detached(PAYLOAD, key)
    protected, empty, signature = jws.split(".")
    assert protected and signature and empty == ""
    assert verify_detached(PAYLOAD, jws, jwks) == {"alg": "ES256", "kid": key.kid}


def test_extra_headers_are_signed_and_returned(key: SigningKey, jwks: JWKSet) -> None:
    jws = sign_detached(PAYLOAD, key, extra_headers={"cty": "application/json", "iat": 17})
    header = verify_detached(PAYLOAD, jws, jwks)
    assert header == {"alg": "ES256", "kid": key.kid, "cty": "application/json", "iat": 17}


@pytest.mark.parametrize("name", ["alg", "kid", "b64", "crit"])
def test_extra_headers_cannot_override_what_the_signer_sets(key: SigningKey, name: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"may not set ['{name}']")):
        sign_detached(PAYLOAD, key, extra_headers={name: "x"})


def test_the_standard_b64_form_verifies_with_any_jose_library(key: SigningKey) -> None:
    protected, _, signature = sign_detached(PAYLOAD, key).split(".")
    attached = f"{protected}.{_b64url(PAYLOAD)}.{signature}"
    assert jwt.api_jws.decode(attached, key.public_key, algorithms=["ES256"]) == PAYLOAD


def test_an_empty_payload_can_be_signed(key: SigningKey, jwks: JWKSet) -> None:
    assert verify_detached(b"", sign_detached(b"", key), jwks)["kid"] == key.kid


def test_one_flipped_byte_in_a_megabyte_is_detected(key: SigningKey, jwks: JWKSet) -> None:
    payload = bytearray(os.urandom(1024 * 1024))
    jws = sign_detached(bytes(payload), key)
    assert verify_detached(bytes(payload), jws, jwks)["kid"] == key.kid
    payload[654_321] ^= 0x01
    _refused(bytes(payload), jws, jwks, "signature does not verify")


def test_a_tampered_header_is_detected(key: SigningKey, jwks: JWKSet) -> None:
    protected, _, signature = sign_detached(PAYLOAD, key, extra_headers={"cty": "a"}).split(".")
    header = {**_decode_segment(protected), "cty": "b"}
    forged = f"{_b64url(json.dumps(header).encode())}..{signature}"
    _refused(PAYLOAD, forged, jwks, "signature does not verify")


def test_a_signature_from_another_payload_is_refused(key: SigningKey, jwks: JWKSet) -> None:
    _refused(PAYLOAD, sign_detached(b"something else", key), jwks, "signature does not verify")


def test_another_key_under_a_known_kid_is_refused(key: SigningKey, jwks: JWKSet) -> None:
    impostor = SigningKey(SigningKey.generate().private_key, kid=key.kid)
    _refused(PAYLOAD, sign_detached(PAYLOAD, impostor), jwks, "signature does not verify")


def test_an_unknown_kid_is_refused(jwks: JWKSet) -> None:
    jws = sign_detached(PAYLOAD, SigningKey.generate("nobody"))
    _refused(PAYLOAD, jws, jwks, "payload signed by unknown key id 'nobody'")


@pytest.mark.parametrize(
    "jws", ["", "abc", "..", "a..", "..b", "a.b.c", "a...b", "!!!..AAAA"], ids=repr
)
def test_a_malformed_jws_is_refused(jwks: JWKSet, jws: str) -> None:
    with pytest.raises(Unauthorized, match="malformed detached JWS"):
        verify_detached(PAYLOAD, jws, jwks)


def test_the_attached_form_is_refused(key: SigningKey, jwks: JWKSet) -> None:
    protected, _, signature = sign_detached(PAYLOAD, key).split(".")
    attached = f"{protected}.{_b64url(PAYLOAD)}.{signature}"
    with pytest.raises(Unauthorized, match=re.escape("expected '<protected>..<signature>'")):
        verify_detached(PAYLOAD, attached, jwks)


def test_hs256_keyed_with_the_public_key_is_refused(key: SigningKey, jwks: JWKSet) -> None:
    protected = _b64url(json.dumps({"alg": "HS256", "kid": key.kid}).encode())
    secret = json.dumps(key.public_jwk()).encode()
    mac = hmac.new(secret, f"{protected}.{_b64url(PAYLOAD)}".encode(), hashlib.sha256).digest()
    jws = f"{protected}..{_b64url(mac)}"
    _refused(PAYLOAD, jws, jwks, "JWS algorithm 'HS256' is not accepted; only ES256 is")


def test_unencoded_payload_form_is_refused(key: SigningKey, jwks: JWKSet) -> None:
    # RFC 7797 (b64: false) signs the raw payload; we only verify the standard form.
    unencoded = jwt.api_jws.encode(
        PAYLOAD, key.private_key, algorithm="ES256", headers={"kid": key.kid, "b64": False}
    )
    with pytest.raises(Unauthorized, match="malformed detached JWS"):
        verify_detached(PAYLOAD, unencoded, jwks)


def test_a_jws_without_kid_is_refused(key: SigningKey, jwks: JWKSet) -> None:
    attached = jwt.api_jws.encode(PAYLOAD, key.private_key, algorithm="ES256")
    protected, _, signature = attached.split(".")
    _refused(
        PAYLOAD,
        f"{protected}..{signature}",
        jwks,
        "JWS has no key id ('kid') in its protected header",
    )
