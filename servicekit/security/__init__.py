"""Identity and security for every service: keys, identity tokens, detached JWS, TLS, local CA."""

from servicekit.security.ca import LocalCA
from servicekit.security.identity import (
    ADMIN_CLAIM,
    ANONYMOUS_CLAIM,
    Identity,
    check_principal,
    current_identity,
    optional_identity,
)
from servicekit.security.jws import sign_detached, verify_detached
from servicekit.security.keys import (
    JWKSet,
    SigningKey,
    load_or_create_signing_key,
    write_jwks,
)
from servicekit.security.signed_events import sign_event, verify_event
from servicekit.security.tls import (
    MODERN_TLS12_CIPHERS,
    WeakCertificateError,
    client_context,
    refuse_weak_certificate,
    server_context,
)
from servicekit.security.tokens import (
    DEFAULT_ISSUER,
    IdentityVerifier,
    issue_identity_token,
    verify_identity_token,
)

__all__ = [
    "ADMIN_CLAIM",
    "ANONYMOUS_CLAIM",
    "DEFAULT_ISSUER",
    "MODERN_TLS12_CIPHERS",
    "Identity",
    "IdentityVerifier",
    "JWKSet",
    "LocalCA",
    "SigningKey",
    "WeakCertificateError",
    "check_principal",
    "client_context",
    "current_identity",
    "issue_identity_token",
    "load_or_create_signing_key",
    "optional_identity",
    "refuse_weak_certificate",
    "server_context",
    "sign_detached",
    "sign_event",
    "verify_detached",
    "verify_event",
    "verify_identity_token",
    "write_jwks",
]
