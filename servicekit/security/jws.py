"""Detached ES256 JWS (RFC 7515 Appendix F) over raw payload bytes, for critical payloads.

The standard form is used: the payload is base64url-encoded in the signing input (no RFC 7797
`b64: false`), so any JOSE library can verify `<protected>..<signature>` given the payload.
"""

from __future__ import annotations

import base64
from typing import Any

from jwt import api_jws
from jwt.exceptions import InvalidSignatureError, PyJWTError

from servicekit.errors import Unauthorized
from servicekit.security.keys import ALGORITHM, JWKSet, SigningKey

# Headers the signer sets itself; letting a caller override them would change what is signed.
_RESERVED_HEADERS = frozenset({"alg", "kid", "b64", "crit"})


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def sign_detached(
    payload: bytes, key: SigningKey, *, extra_headers: dict[str, Any] | None = None
) -> str:
    """`<protected>..<signature>` over `payload`; the payload travels separately."""
    extra = dict(extra_headers or {})
    if clash := _RESERVED_HEADERS & extra.keys():
        raise ValueError(f"extra_headers may not set {sorted(clash)}; the signer sets them")
    # PyJWS would add typ=JWT, which this is not; None drops it unless the caller sets one.
    headers = {"typ": None, **extra, "kid": key.kid}
    compact = api_jws.encode(payload, key.private_key, algorithm=ALGORITHM, headers=headers)
    protected, _, signature = compact.split(".")
    return f"{protected}..{signature}"


def verify_detached(payload: bytes, jws: str, jwks: JWKSet) -> dict[str, Any]:
    """The protected header of `jws` when it signs exactly `payload` with a key of `jwks`.

    Raises Unauthorized saying what was wrong on any mismatch.
    """
    parts = jws.split(".")
    if len(parts) != 3 or parts[1] != "" or not parts[0] or not parts[2]:
        raise Unauthorized("malformed detached JWS: expected '<protected>..<signature>'")
    protected, _, signature = parts
    try:
        header = api_jws.get_unverified_header(jws)
    except PyJWTError as exc:
        raise Unauthorized(f"malformed detached JWS: {exc}") from None
    if header.get("alg") != ALGORITHM:
        raise Unauthorized(
            f"JWS algorithm {header.get('alg')!r} is not accepted; only {ALGORITHM} is"
        )
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise Unauthorized("JWS has no key id ('kid') in its protected header")
    if kid not in jwks:
        raise Unauthorized(f"payload signed by unknown key id {kid!r}")
    compact = f"{protected}.{_b64url(payload).decode('ascii')}.{signature}"
    try:
        api_jws.decode_complete(compact, jwks.key_for(kid), algorithms=[ALGORITHM])
    except InvalidSignatureError:
        raise Unauthorized("signature does not verify") from None
    except PyJWTError as exc:
        raise Unauthorized(f"malformed detached JWS: {exc}") from None
    return header
