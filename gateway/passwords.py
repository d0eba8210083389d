"""Hashing of passwords and API-key secrets with scrypt; verifying them in constant time."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os

__all__ = ["hash_secret", "verify_secret"]

# RFC 7914's interactive parameters: ~50 ms and 16 MiB per hash.
_N, _R, _P = 2**14, 8, 1
_LENGTH = 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        secret.encode(), salt=salt, n=n, r=r, p=p, dklen=_LENGTH, maxmem=64 * 1024 * 1024
    )


def hash_secret(secret: str) -> str:
    """`scrypt$<n>$<r>$<p>$<salt>$<hash>`: the parameters travel with the hash."""
    salt = os.urandom(16)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(_scrypt(secret, salt, _N, _R, _P))}"


def _verify(secret: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        actual = _scrypt(secret, base64.b64decode(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, base64.b64decode(digest))


async def verify_secret(secret: str, stored: str | None) -> bool:
    """Whether `secret` hashes to `stored`; off the event loop, as scrypt is slow on purpose."""
    if stored is None:
        # Same work as a real check, so timing does not tell which accounts exist.
        await asyncio.to_thread(hash_secret, secret)
        return False
    return await asyncio.to_thread(_verify, secret, stored)
