"""What upstreams are told about the caller: a fresh identity token, never the client's headers."""

from __future__ import annotations

import time
from collections.abc import Callable

from servicekit.security import Identity, SigningKey, issue_identity_token

__all__ = ["IDENTITY_HEADERS", "IdentityTokens"]

# Headers a client could use to claim an identity upstream; the gateway alone sets them.
IDENTITY_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "nuvla-authn-info",
        "x-extract-identity",
        "x-extract-principal",
        "x-forwarded-user",
        "x-remote-user",
    }
)


class IdentityTokens:
    """Issues the short-lived ES256 identity token for each upstream call.

    A token is reused for at most a tenth of its lifetime: signing per request would cost more
    than the rest of the proxying, and a reused token is still minutes from expiry.
    """

    def __init__(
        self,
        key: SigningKey,
        *,
        ttl: float,
        issuer: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key
        self.ttl = ttl
        self.issuer = issuer
        self._clock = clock
        self._reuse_for = ttl / 10
        self._cache: dict[Identity, tuple[float, str, bytes]] = {}

    def token_for(self, identity: Identity) -> str:
        return self._cached(identity)[1]

    def header_for(self, identity: Identity) -> bytes:
        """`Bearer <token>`, as the value of an Authorization header."""
        return self._cached(identity)[2]

    def _cached(self, identity: Identity) -> tuple[float, str, bytes]:
        now = self._clock()
        cached = self._cache.get(identity)
        if cached is not None and now - cached[0] < self._reuse_for:
            return cached
        token = issue_identity_token(
            self.key,
            identity.principal,
            identity.claims,
            ttl=self.ttl,
            issuer=self.issuer,
            now=now,
        )
        if len(self._cache) > 10_000:
            self._cache.clear()
        cached = self._cache[identity] = (now, token, f"Bearer {token}".encode())
        return cached
