"""ECDSA P-256 signing keys with key ids, and the JWK sets that publish their public halves."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import ssl
import tempfile
from collections.abc import Iterable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from jwt.exceptions import PyJWTError

from servicekit.security.identity import invalid_token

ALGORITHM = "ES256"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _require_p256(key: object, what: str) -> None:
    if not isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        raise ValueError(f"{what} is a {type(key).__name__}; only ECDSA P-256 keys are accepted")
    if not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"{what} is on curve {key.curve.name}; only P-256 is accepted")


def jwk_thumbprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """The RFC 7638 SHA-256 thumbprint: a key id anyone holding the public key can recompute."""
    jwk = ECAlgorithm.to_jwk(public_key, as_dict=True)
    # RFC 7638 §3.2: only the required members, sorted, no whitespace.
    canonical = json.dumps(
        {name: jwk[name] for name in ("crv", "kty", "x", "y")},
        separators=(",", ":"),
        sort_keys=True,
    )
    return _b64url(hashlib.sha256(canonical.encode()).digest())


class SigningKey:
    """An ECDSA P-256 private key and the key id (`kid`) that verifiers look it up by."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, kid: str | None = None) -> None:
        _require_p256(private_key, "signing key")
        if kid is not None and (not isinstance(kid, str) or not kid):
            raise ValueError("a key id must be a non-empty string")
        self.private_key = private_key
        self.kid = kid if kid is not None else jwk_thumbprint(private_key.public_key())

    @classmethod
    def generate(cls, kid: str | None = None) -> SigningKey:
        return cls(ec.generate_private_key(ec.SECP256R1()), kid)

    @classmethod
    def from_pem(cls, pem: bytes, kid: str | None = None) -> SigningKey:
        try:
            private_key = serialization.load_pem_private_key(pem, password=None)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not an unencrypted PEM private key: {exc}") from exc
        _require_p256(private_key, "PEM key")
        assert isinstance(private_key, ec.EllipticCurvePrivateKey)
        return cls(private_key, kid)

    def to_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()

    def public_jwk(self) -> dict[str, str]:
        jwk = ECAlgorithm.to_jwk(self.public_key, as_dict=True)
        return {**jwk, "kid": self.kid, "alg": ALGORITHM, "use": "sig"}

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r})"


def _parse_public_jwk(jwk: object) -> tuple[str, dict[str, str], ec.EllipticCurvePublicKey]:
    if not isinstance(jwk, Mapping):
        raise ValueError(f"a JWK must be a JSON object, not {type(jwk).__name__}")
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ValueError("a JWK has no 'kid'; every key must be named")
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise ValueError(
            f"JWK {kid!r} is kty={jwk.get('kty')!r} crv={jwk.get('crv')!r}; "
            "only EC P-256 keys are accepted"
        )
    if "d" in jwk:
        raise ValueError(f"JWK {kid!r} contains a private key ('d'); publish public keys only")
    if jwk.get("alg", ALGORITHM) != ALGORITHM or jwk.get("use", "sig") != "sig":
        raise ValueError(
            f"JWK {kid!r} is for alg={jwk.get('alg')!r} use={jwk.get('use')!r}; "
            f"expected alg={ALGORITHM!r} use='sig'"
        )
    try:
        public_key = ECAlgorithm.from_jwk(dict(jwk))
    except (PyJWTError, ValueError) as exc:
        raise ValueError(f"JWK {kid!r} is not a valid P-256 public key: {exc}") from exc
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    canonical = {name: jwk[name] for name in ("kty", "crv", "x", "y")}
    return kid, {**canonical, "kid": kid, "alg": ALGORITHM, "use": "sig"}, public_key


class JWKSet:
    """The public keys a verifier trusts, by key id; only EC P-256 (ES256) keys."""

    def __init__(self, jwks: Iterable[Mapping[str, Any]] = ()) -> None:
        self._jwks: dict[str, dict[str, str]] = {}
        self._keys: dict[str, ec.EllipticCurvePublicKey] = {}
        for jwk in jwks:
            kid, canonical, public_key = _parse_public_jwk(jwk)
            if kid in self._keys:
                raise ValueError(f"JWK set names key id {kid!r} twice")
            self._jwks[kid] = canonical
            self._keys[kid] = public_key

    @classmethod
    def of(cls, *keys: SigningKey) -> JWKSet:
        return cls(key.public_jwk() for key in keys)

    @classmethod
    def from_json(cls, text: str | bytes) -> JWKSet:
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"JWK set is not JSON: {exc}") from exc
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError('JWK set must be a JSON object {"keys": [...]}')
        return cls(document["keys"])

    @classmethod
    def load(
        cls, location: str, *, verify: ssl.SSLContext | bool = True, timeout: float = 10.0
    ) -> JWKSet:
        """Read a JWK set from a file path or an http(s) URL.

        Raises OSError when it cannot be read or fetched, ValueError when it is not a valid set.
        """
        if location.startswith(("http://", "https://")):
            try:
                response = httpx.get(location, verify=verify, timeout=timeout)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                raise OSError(f"cannot fetch JWK set from {location}: {exc}") from exc
            text = response.text
        else:
            text = Path(location).read_text()
        try:
            return cls.from_json(text)
        except ValueError as exc:
            raise ValueError(f"{location}: {exc}") from exc

    def to_json(self) -> str:
        return json.dumps({"keys": list(self._jwks.values())}, indent=2)

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def key_for(self, kid: str) -> ec.EllipticCurvePublicKey:
        try:
            return self._keys[kid]
        except KeyError:
            raise invalid_token(f"signed by unknown key id {kid!r}") from None


def write_file_atomically(path: Path, data: bytes, *, mode: int, overwrite: bool = True) -> None:
    """Write `data` with permissions `mode`, atomically: readers see all of it or nothing.

    With overwrite=False an existing file is kept and FileExistsError raised, so two
    processes racing to create the same key cannot both believe they won.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file 0600, so a private key is never readable by others, even briefly.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.chmod(tmp, mode)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        with suppress(FileNotFoundError):
            os.unlink(tmp)


def load_or_create_signing_key(path: Path) -> SigningKey:
    """The key at `path`, created (mode 0600) on first use and reused afterwards."""
    with suppress(FileNotFoundError):
        return SigningKey.from_pem(path.read_bytes())
    key = SigningKey.generate()
    try:
        write_file_atomically(path, key.to_pem(), mode=0o600, overwrite=False)
    except FileExistsError:
        return SigningKey.from_pem(path.read_bytes())
    return key


def write_jwks(path: Path, keys: Iterable[SigningKey]) -> None:
    """Publish the public halves of `keys` as a JWK set file (mode 0644), replaced atomically."""
    write_file_atomically(path, JWKSet.of(*keys).to_json().encode(), mode=0o644)
