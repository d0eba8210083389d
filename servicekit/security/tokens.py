"""ES256 identity tokens: the short-lived JWT the gateway hands to services, and verifying it."""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import ssl
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import jwt
from jwt.exceptions import InvalidSignatureError, MissingRequiredClaimError, PyJWTError

from servicekit.security.identity import Identity, invalid_token
from servicekit.security.keys import ALGORITHM, JWKSet, SigningKey

DEFAULT_ISSUER = "extract-gateway"
_REQUIRED_CLAIMS = ["iss", "sub", "iat", "nbf", "exp"]
# Time, issuer and audience are checked here rather than by PyJWT, so that `now` can be
# injected and every refusal says exactly what was wrong.
_DECODE_OPTIONS: Any = {
    "require": _REQUIRED_CLAIMS,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_iss": False,
    "verify_aud": False,
}

logger = logging.getLogger(__name__)


def issue_identity_token(
    key: SigningKey,
    principal: str,
    claims: Iterable[str] = (),
    *,
    ttl: float = 300,
    issuer: str = DEFAULT_ISSUER,
    audience: str | None = None,
    now: float | None = None,
) -> str:
    """A signed token naming `principal` and its claims (which always include the principal
    itself and `group/extract-anon`), valid for `ttl` seconds."""
    if ttl <= 0:
        raise ValueError(f"ttl must be positive, not {ttl}")
    identity = Identity(principal, frozenset(claims))
    moment = time.time() if now is None else now
    payload: dict[str, Any] = {
        "iss": issuer,
        "sub": identity.principal,
        "claims": sorted(identity.claims),
        "iat": int(moment),
        "nbf": int(moment),
        "exp": math.ceil(moment + ttl),
        "jti": secrets.token_urlsafe(16),
    }
    if audience is not None:
        payload["aud"] = audience
    return jwt.encode(payload, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})


def verify_identity_token(
    token: str,
    jwks: JWKSet,
    *,
    issuer: str,
    audience: str | None = None,
    leeway: float = 5,
    now: float | None = None,
) -> Identity:
    """The identity a valid token names; Unauthorized saying what was wrong otherwise."""
    moment = time.time() if now is None else now
    identity, _ = _verified(
        token, jwks, issuer=issuer, audience=audience, leeway=leeway, now=moment
    )
    return identity


def _verified(
    token: str, jwks: JWKSet, *, issuer: str, audience: str | None, leeway: float, now: float
) -> tuple[Identity, float]:
    """The identity a valid token names, and the moment from which it is refused as expired."""
    header = _header(token)
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise invalid_token("token has no key id ('kid') in its header")
    if kid not in jwks:
        raise invalid_token(f"token signed by unknown key id {kid!r}")
    try:
        payload = jwt.decode(
            token, jwks.key_for(kid), algorithms=[ALGORITHM], options=_DECODE_OPTIONS
        )
    except InvalidSignatureError:
        raise invalid_token("signature does not verify") from None
    except MissingRequiredClaimError as exc:
        raise invalid_token(f"token lacks the {exc.claim!r} claim") from None
    except PyJWTError as exc:
        raise invalid_token(f"malformed token: {exc}") from None
    _check_issuer(payload, issuer)
    _check_audience(payload, audience)
    _check_times(payload, now, leeway)
    return _identity(payload), _instant(payload, "exp") + leeway


def _header(token: str) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except PyJWTError as exc:
        raise invalid_token(f"malformed token: {exc}") from None
    # Checked before any key is touched: this is what stops alg=none and the
    # HS256-keyed-with-the-public-key confusion.
    if header.get("alg") != ALGORITHM:
        raise invalid_token(
            f"token algorithm {header.get('alg')!r} is not accepted; only {ALGORITHM} is"
        )
    return header


def _check_issuer(payload: dict[str, Any], issuer: str) -> None:
    if payload["iss"] != issuer:
        raise invalid_token(f"token issued by {payload['iss']!r}, expected {issuer!r}")


def _check_audience(payload: dict[str, Any], audience: str | None) -> None:
    aud = payload.get("aud")
    if aud is None:
        if audience is not None:
            raise invalid_token(f"token has no audience, expected {audience!r}")
        return
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise invalid_token("token claim 'aud' must be a string or a list of strings")
    if audience is None:
        # RFC 7519 §4.1.3: a recipient that is not named in 'aud' must refuse the token.
        raise invalid_token(f"token is restricted to audience {aud!r}; this service has none")
    if audience not in audiences:
        raise invalid_token(f"token is for audience {aud!r}, not {audience!r}")


def _instant(payload: dict[str, Any], name: str) -> float:
    value = payload[name]
    # NaN would make every comparison false, i.e. a token that never expires.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise invalid_token(f"token claim {name!r} is not a finite number of seconds")
    return float(value)


def _iso(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"{seconds:g} seconds after the epoch"


def _check_times(payload: dict[str, Any], now: float, leeway: float) -> None:
    expires = _instant(payload, "exp")
    not_before = _instant(payload, "nbf")
    issued = _instant(payload, "iat")
    if now >= expires + leeway:
        raise invalid_token(f"token expired at {_iso(expires)}")
    if now < not_before - leeway:
        raise invalid_token(f"token not valid before {_iso(not_before)}")
    if now < issued - leeway:
        raise invalid_token(f"token issued in the future, at {_iso(issued)}")


def _identity(payload: dict[str, Any]) -> Identity:
    claims = payload.get("claims", [])
    if not isinstance(claims, list) or not all(isinstance(c, str) for c in claims):
        raise invalid_token("token claim 'claims' must be a list of strings")
    try:
        return Identity(payload["sub"], frozenset(claims))
    except ValueError as exc:
        raise invalid_token(f"token names {exc}") from None


class IdentityVerifier:
    """Verifies identity tokens against a JWK set that follows key rotation.

    `source` is a fixed JWKSet or a location (file path or http(s) URL) read now. When a
    token names a key id the set lacks, the location is re-read once before the token is
    refused, at most every `min_refresh_interval` seconds so that forged key ids cannot
    turn every request into a fetch.

    Verified tokens are remembered (up to `cache_size`, the oldest forgotten first), so a
    caller's next requests skip the signature check: a remembered token is accepted only by
    its exact text and only until it expires by `wall_clock`, and a refresh forgets them all
    (a key gone from the set verifies nothing more).
    """

    def __init__(
        self,
        source: JWKSet | str,
        *,
        issuer: str = DEFAULT_ISSUER,
        audience: str | None = None,
        leeway: float = 5,
        min_refresh_interval: float = 30,
        verify: ssl.SSLContext | bool = True,
        clock: Callable[[], float] = time.monotonic,
        cache_size: int = 1024,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self._min_refresh_interval = min_refresh_interval
        self._verify_tls = verify
        self._clock = clock
        self._last_refresh: float | None = None
        self._cache_size = cache_size
        self._wall_clock = wall_clock
        self._verified: dict[str, tuple[Identity, float]] = {}
        if isinstance(source, JWKSet):
            self._location: str | None = None
            self.jwks = source
        else:
            self._location = source
            self.jwks = JWKSet.load(source, verify=verify)

    def refresh(self) -> None:
        """Re-read the JWK set from its location; a fixed set has nothing to re-read."""
        if self._location is not None:
            self.jwks = JWKSet.load(self._location, verify=self._verify_tls)
            self._verified.clear()

    def verify(self, token: str) -> Identity:
        if self._should_refresh_for(token):
            self._refresh_or_keep()
        return self._verify(token)

    async def verify_async(self, token: str) -> Identity:
        """`verify` for the event loop: a refresh that fetches a URL runs in a thread."""
        if self._should_refresh_for(token):
            await asyncio.to_thread(self._refresh_or_keep)
        return self._verify(token)

    def _verify(self, token: str) -> Identity:
        now = self._wall_clock()
        remembered = self._verified.pop(token, None)
        if remembered is not None and now < remembered[1]:
            identity, until = remembered
        else:
            identity, until = _verified(
                token,
                self.jwks,
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                now=now,
            )
        if len(self._verified) >= self._cache_size:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (identity, until)  # last: the most recently used
        return identity

    def _should_refresh_for(self, token: str) -> bool:
        if self._location is None or token in self._verified:  # its key is in the set
            return False
        try:
            header = jwt.get_unverified_header(token)
        except PyJWTError:
            return False
        kid = header.get("kid")
        if header.get("alg") != ALGORITHM or not isinstance(kid, str) or kid in self.jwks:
            return False
        moment = self._clock()
        if (
            self._last_refresh is not None
            and moment - self._last_refresh < self._min_refresh_interval
        ):
            return False
        self._last_refresh = moment
        return True

    def _refresh_or_keep(self) -> None:
        # An unreachable key source must not take down verification with the keys we have.
        try:
            self.refresh()
        except (OSError, ValueError) as exc:
            logger.warning("keeping the current JWK set: %s", exc)
