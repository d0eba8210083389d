"""Who is calling: the principal and its claims, and the FastAPI dependencies that establish it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request

from servicekit.errors import ExtractError, Unauthorized

if TYPE_CHECKING:
    from servicekit.security.tokens import IdentityVerifier

ANONYMOUS_CLAIM = "group/extract-anon"
ADMIN_CLAIM = "group/extract-admin"
PRINCIPAL_KINDS = ("user", "group", "session", "credential")

# A name is anything printable without whitespace or '/', so e-mail style names
# ("user/jane@example.org") and UUIDs pass while "user/" or "user/jane doe" do not.
_PRINCIPAL = re.compile(rf"(?:{'|'.join(PRINCIPAL_KINDS)})/[^\s/\x00-\x1f\x7f]+")
_NOT_IN_DESCRIPTION = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")


def check_principal(value: str) -> None:
    """Raise ValueError unless `value` is `<kind>/<name>` with a known kind."""
    if not isinstance(value, str) or not _PRINCIPAL.fullmatch(value):
        kinds = ", ".join(f"{kind}/<name>" for kind in PRINCIPAL_KINDS)
        raise ValueError(
            f"invalid principal {value!r}: expected one of {kinds}, "
            "with a non-empty name without spaces or '/'"
        )


@dataclass(frozen=True)
class Identity:
    """A verified caller; `claims` always holds the principal itself and the anonymous group."""

    principal: str
    claims: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        check_principal(self.principal)
        claims = frozenset(self.claims) | {self.principal, ANONYMOUS_CLAIM}
        for claim in claims:
            check_principal(claim)
        object.__setattr__(self, "claims", claims)

    @classmethod
    def anonymous(cls) -> Identity:
        return cls(ANONYMOUS_CLAIM)

    @property
    def is_admin(self) -> bool:
        return ADMIN_CLAIM in self.claims


def invalid_token(message: str) -> Unauthorized:
    """The 401 for a bad bearer token, with the RFC 6750 challenge naming what was wrong."""
    # RFC 6750 §3 limits error_description to printable ASCII without '"' or backslash; the
    # message may quote token contents, which must not break (or inject into) the header.
    description = _NOT_IN_DESCRIPTION.sub("?", message.replace('"', "'"))
    return Unauthorized(
        message,
        headers={
            "WWW-Authenticate": f'Bearer error="invalid_token", error_description="{description}"'
        },
    )


def _missing_token() -> Unauthorized:
    # RFC 6750 §3.1: a request without credentials gets a bare challenge, no error code.
    return Unauthorized(
        "missing bearer token: send 'Authorization: Bearer <token>'",
        headers={"WWW-Authenticate": "Bearer"},
    )


def _bearer_token(header: str) -> str:
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise invalid_token(f"Authorization header uses scheme {scheme!r}; expected Bearer")
    token = token.strip()
    if not token:
        raise invalid_token("Authorization header has the Bearer scheme but no token")
    return token


def _verifier(request: Request) -> IdentityVerifier:
    verifier = getattr(request.app.state, "identity_verifier", None)
    if verifier is None:
        raise ExtractError("server misconfigured: app.state.identity_verifier is not set")
    return verifier


async def current_identity(request: Request) -> Identity:
    """FastAPI dependency: the caller named by a valid bearer token; 401 otherwise."""
    header = request.headers.get("authorization")
    if header is None:
        raise _missing_token()
    return await _verifier(request).verify_async(_bearer_token(header))


async def optional_identity(request: Request) -> Identity:
    """FastAPI dependency: like `current_identity`, but no Authorization header means anonymous."""
    header = request.headers.get("authorization")
    if header is None:
        return Identity.anonymous()
    return await _verifier(request).verify_async(_bearer_token(header))
