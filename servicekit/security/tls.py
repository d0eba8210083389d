"""TLS contexts with the platform's policy: TLS 1.2+, ECDHE AEAD suites only, sound certificates."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

# TLS 1.2 suites; set_ciphers leaves TLS 1.3's suites (all AEAD) as OpenSSL has them.
MODERN_TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
)
_ACCEPTED_CURVES = (ec.SECP256R1, ec.SECP384R1)
_MIN_RSA_BITS = 2048


class WeakCertificateError(ValueError):
    """A certificate that production mode refuses to serve."""


def _apply_policy(context: ssl.SSLContext) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(":".join(MODERN_TLS12_CIPHERS))
    # CRIME: compression leaks secrets through ciphertext length.
    context.options |= ssl.OP_NO_COMPRESSION


def server_context(
    cert_file: str | Path,
    key_file: str | Path,
    *,
    production: bool = False,
    client_ca: str | Path | None = None,
) -> ssl.SSLContext:
    """A server context; `client_ca` turns on mutual TLS (clients must present a certificate
    issued by it). In production mode a weak certificate raises WeakCertificateError."""
    if production:
        refuse_weak_certificate(cert_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _apply_policy(context)
    context.options |= (
        ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION | ssl.OP_SINGLE_ECDH_USE
    )
    context.load_cert_chain(cert_file, key_file)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=client_ca)
    return context


def client_context(
    ca_file: str | Path | None = None,
    *,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
) -> ssl.SSLContext:
    """A client context that verifies the server (against `ca_file`, or the system's trust
    store when None) and presents `cert_file` for mutual TLS when given."""
    if key_file is not None and cert_file is None:
        raise ValueError("key_file given without cert_file")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    _apply_policy(context)
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context


def refuse_weak_certificate(cert_file: str | Path) -> None:
    """Raise WeakCertificateError naming the file and every reason its leaf is unfit."""
    try:
        leaf = x509.load_pem_x509_certificates(Path(cert_file).read_bytes())[0]
    except ValueError as exc:
        raise WeakCertificateError(f"{cert_file}: not a PEM certificate: {exc}") from exc
    reasons = _weaknesses(leaf, datetime.now(UTC))
    if reasons:
        raise WeakCertificateError(
            f"{cert_file}: refusing this certificate in production mode: {'; '.join(reasons)}"
        )


def _weaknesses(leaf: x509.Certificate, now: datetime) -> list[str]:
    reasons = []
    if leaf.issuer == leaf.subject:
        reasons.append("it is self-signed; use a certificate issued by a certificate authority")
    key = leaf.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            reasons.append(
                f"its RSA key has {key.key_size} bits; at least {_MIN_RSA_BITS} are needed"
            )
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _ACCEPTED_CURVES):
            reasons.append(f"its EC key is on curve {key.curve.name}; only P-256 or P-384 will do")
    else:
        reasons.append(f"its {type(key).__name__} is not accepted; use ECDSA P-256")
    if now < leaf.not_valid_before_utc:
        reasons.append(f"it is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC")
    if now > leaf.not_valid_after_utc:
        reasons.append(f"it expired at {leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")
    digest = leaf.signature_hash_algorithm
    if isinstance(digest, hashes.SHA1 | hashes.MD5):
        reasons.append(f"it is signed with {digest.name.upper()}; SHA-256 or stronger is needed")
    return reasons
