"""ES256 bearer tokens from an external OpenID Connect issuer, verified against its JWKS.

Real issuers publish RSA keys beside EC ones and name users by opaque subjects, so this is not
servicekit's identity-token check: keys other than EC P-256 are skipped, and the caller
becomes `user/<preferred_username or sub>` with `group/<g>` for each entry of `groups`
(Keycloak's leading "/" dropped); a token in the platform's own shape (`sub` a principal,
`claims` a list) keeps its principal and claims.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
from jwt.exceptions import InvalidSignatureError, PyJWTError

from servicekit.security import Identity, JWKSet
from servicekit.security.identity import check_principal, invalid_token

__all__ = ["OidcVerifier", "identity_from_claims"]


def _read(location: str) -> str:
    if location.startswith(("http://", "https://")):
        response = httpx.get(location, timeout=10)
        response.raise_for_status()
        return response.text
    return Path(location).read_text()


def _p256_keys(text: str) -> JWKSet:
    document = json.loads(text)
    keys = document.get("keys", []) if isinstance(document, dict) else []
    usable = [
        key
        for key in keys
        if isinstance(key, dict)
        and key.get("kty") == "EC"
        and key.get("crv") == "P-256"
        and key.get("use", "sig") == "sig"
        and key.get("alg", "ES256") == "ES256"
    ]
    return JWKSet(usable)


def _principal(kind: str, name: str) -> str | None:
    principal = f"{kind}/{name.lstrip('/')}"
    try:
        check_principal(principal)
    except ValueError:
        return None
    return principal


def identity_from_claims(payload: dict[str, Any]) -> Identity:
    sub = payload.get("sub")
    if not isinstance(sub, str) or not sub:
        raise invalid_token("token has no subject ('sub')")
    platform_claims = payload.get("claims")
    if sub.startswith(("user/", "group/")) and isinstance(platform_claims, list):
        claims = {c for c in platform_claims if isinstance(c, str) and _principal(*c.split("/", 1))}
        return Identity(sub, frozenset(claims))
    name = payload.get("preferred_username") or sub
    principal = _principal("user", str(name))
    if principal is None:
        raise invalid_token(f"token subject {name!r} cannot name a platform user")
    groups = payload.get("groups", [])
    claims = {
        g for g in (_principal("group", n) for n in groups if isinstance(n, str)) if g is not None
    }
    return Identity(principal, frozenset(claims))


class OidcVerifier:
    """Keys are read at start and re-read (at most every `min_refresh_interval` s) when a token
    names an unknown key id, so that the issuer can rotate keys."""

    def __init__(
        self,
        location: str,
        *,
        issuer: str,
        audience: str | None,
        leeway: float = 30,
        min_refresh_interval: float = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.location = location
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self._min_refresh_interval = min_refresh_interval
        self._clock = clock
        self._last_refresh = clock()
        self.jwks = _p256_keys(_read(location))

    async def verify_async(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except PyJWTError as exc:
            raise invalid_token(f"malformed token: {exc}") from None
        if header.get("alg") != "ES256":
            raise invalid_token(
                f"token algorithm {header.get('alg')!r} is not accepted; only ES256 is"
            )
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise invalid_token("token has no key id ('kid') in its header")
        if (
            kid not in self.jwks
            and self._clock() - self._last_refresh >= self._min_refresh_interval
        ):
            self._last_refresh = self._clock()
            # An unreachable issuer must not stop verification with the keys we have.
            with contextlib.suppress(OSError, ValueError, httpx.HTTPError):
                self.jwks = _p256_keys(await asyncio.to_thread(_read, self.location))
        try:
            payload = jwt.decode(
                token,
                self.jwks.key_for(kid),
                algorithms=["ES256"],
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                options={"require": ["iss", "sub", "exp"], "verify_aud": self.audience is not None},
            )
        except InvalidSignatureError:
            raise invalid_token("signature does not verify") from None
        except PyJWTError as exc:
            raise invalid_token(f"token refused: {exc}") from None
        return identity_from_claims(payload)
