"""Signed critical payloads: detached ES256 JWS on critical responses, and device signatures
(with created/expires/nonce replay protection) required on critical requests.

A device signature is a detached JWS over the request body, in the `X-Device-Signature`
header. Its protected header holds `kid` (the registered device key's RFC 7638 thumbprint),
`created` and `expires` (seconds since the epoch), a `nonce` used once, and `htm`/`htu` (the
method and path), so that a signature cannot be replayed, kept for later or moved to
another route.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from jwt import api_jws
from jwt.exceptions import PyJWTError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.tables import devices, nonces
from servicekit.db import utc_now
from servicekit.errors import InvalidInput, Unauthorized
from servicekit.security import JWKSet, SigningKey, sign_detached, verify_detached
from servicekit.security.keys import jwk_thumbprint

__all__ = [
    "DEVICE_SIGNATURE_HEADER",
    "RESPONSE_SIGNATURE_HEADER",
    "DeviceSignatures",
    "ResponseSigner",
    "register_device_key",
    "sign_device_request",
]

RESPONSE_SIGNATURE_HEADER = "x-jws-signature"
DEVICE_SIGNATURE_HEADER = "x-device-signature"
MAX_SIGNATURE_LIFETIME = 300  # seconds between `created` and `expires`, at most
CLOCK_SKEW = 30


def sign_device_request(
    key: SigningKey,
    method: str,
    path: str,
    body: bytes,
    *,
    lifetime: float = 60,
    now: float | None = None,
    nonce: str | None = None,
) -> str:
    """What a device puts in X-Device-Signature (the SDK and tests use this)."""
    created = int(time.time() if now is None else now)
    return sign_detached(
        body,
        key,
        extra_headers={
            "created": created,
            "expires": int(created + lifetime),
            "nonce": nonce or secrets.token_urlsafe(16),
            "htm": method.upper(),
            "htu": path,
        },
    )


async def register_device_key(*, session: AsyncSession, owner: str, jwk: Mapping[str, Any]) -> str:
    """Store a device's P-256 public key; its id is `device-key/<thumbprint>` (idempotent)."""
    try:
        public = JWKSet([{"use": "sig", "alg": "ES256", **jwk, "kid": "device"}])
    except ValueError as exc:
        raise InvalidInput(f"jwk: {exc}") from None
    thumbprint = jwk_thumbprint(public.key_for("device"))
    device_id = f"device-key/{thumbprint}"
    found = await session.scalar(sa.select(devices.c.owner).where(devices.c.id == device_id))
    if found is None:
        canonical = {name: jwk[name] for name in ("kty", "crv", "x", "y")}
        await session.execute(
            devices.insert().values(id=device_id, owner=owner, jwk=canonical, created=utc_now())
        )
    return device_id


def _number(header: Mapping[str, Any], name: str) -> float:
    value = header.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unauthorized(f"device signature: '{name}' must be a number of seconds")
    return float(value)


class DeviceSignatures:
    def __init__(
        self,
        database: async_sessionmaker[AsyncSession],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.database = database
        self._clock = clock

    async def verify(
        self, signature: str | None, method: str, path: str, body: bytes, *, caller: str
    ) -> str:
        """The device key id that signed this request for `caller` (the principal it comes
        from, who must have registered the key); Unauthorized saying why otherwise."""
        if not signature:
            raise Unauthorized(
                f"missing device signature: {path} needs an {DEVICE_SIGNATURE_HEADER} header"
            )
        kid = self._kid(signature)
        device_id = kid if kid.startswith("device-key/") else f"device-key/{kid}"
        async with self.database() as session:
            found = (
                await session.execute(
                    sa.select(devices.c.owner, devices.c.jwk).where(devices.c.id == device_id)
                )
            ).first()
        if found is None:
            raise Unauthorized(f"device signature: no registered device key {device_id!r}")
        header = verify_detached(body, signature, JWKSet([{**found.jwk, "kid": kid}]))
        if found.owner != caller:
            raise Unauthorized(
                f"device signature: {device_id} is registered to {found.owner}, "
                f"and this request comes from {caller}"
            )
        self._check_binding(header, method, path)
        expires = self._check_times(header)
        await self._use_nonce(device_id, header.get("nonce"), expires)
        return device_id

    @staticmethod
    def _kid(signature: str) -> str:
        try:
            kid = api_jws.get_unverified_header(signature).get("kid")
        except PyJWTError as exc:
            raise Unauthorized(f"device signature is malformed: {exc}") from None
        if not isinstance(kid, str):
            raise Unauthorized("device signature names no key ('kid')")
        return kid

    @staticmethod
    def _check_binding(header: Mapping[str, Any], method: str, path: str) -> None:
        if header.get("htm") != method or header.get("htu") != path:
            raise Unauthorized(
                f"device signature is for {header.get('htm')} {header.get('htu')}, "
                f"not {method} {path}"
            )

    def _check_times(self, header: Mapping[str, Any]) -> float:
        created, expires = _number(header, "created"), _number(header, "expires")
        now = self._clock()
        if created > now + CLOCK_SKEW:
            raise Unauthorized("device signature: 'created' is in the future")
        if expires <= now:
            raise Unauthorized(f"device signature expired {now - expires:.0f}s ago")
        if expires - created > MAX_SIGNATURE_LIFETIME:
            raise Unauthorized(
                f"device signature lives {expires - created:.0f}s; "
                f"at most {MAX_SIGNATURE_LIFETIME}s is accepted"
            )
        return expires

    async def _use_nonce(self, kid: str, nonce: object, expires: float) -> None:
        if not isinstance(nonce, str) or not 8 <= len(nonce) <= 128:
            raise Unauthorized("device signature: 'nonce' must be a string of 8 to 128 characters")
        expiry = datetime.fromtimestamp(expires + CLOCK_SKEW, UTC)
        try:
            async with self.database.begin() as session:
                await session.execute(nonces.delete().where(nonces.c.expires < utc_now()))
                await session.execute(
                    nonces.insert().values(device=kid, nonce=nonce, expires=expiry)
                )
        except IntegrityError:
            raise Unauthorized("device signature replayed: its nonce was used before") from None


class ResponseSigner:
    """Signs critical response bodies; `jwks` is what /.well-known/jwks.json publishes."""

    def __init__(self, key: SigningKey) -> None:
        self.key = key
        self.jwks = JWKSet.of(key)

    def sign(self, body: bytes) -> str:
        return sign_detached(body, self.key)
