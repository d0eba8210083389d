"""Who is calling: a session cookie, an external ES256 bearer token, or nobody (anonymous)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from gateway.oidc import OidcVerifier
from gateway.sessions import SESSION_COOKIE, LoginSession, SessionStore
from servicekit.security import Identity
from servicekit.security.identity import invalid_token

__all__ = ["Authenticator", "Caller"]


@dataclass(frozen=True)
class Caller:
    identity: Identity
    session: LoginSession | None = None


class Authenticator:
    """A bearer token, when sent, must verify (401 otherwise); a session cookie that names
    no live session is ignored, as Nuvla does, and the caller is anonymous."""

    def __init__(self, sessions: SessionStore, bearer: OidcVerifier | None) -> None:
        self.sessions = sessions
        self.bearer = bearer

    async def caller(self, request: Request) -> Caller:
        header = request.headers.get("authorization")
        if header is not None:
            return Caller(await self._bearer_identity(header))
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            login = await self.sessions.lookup(token)
            if login is not None:
                return Caller(login.identity, login)
        return Caller(Identity.anonymous())

    async def _bearer_identity(self, header: str) -> Identity:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise invalid_token("Authorization must be 'Bearer <token>' from the trusted issuer")
        if self.bearer is None:
            raise invalid_token("this gateway trusts no bearer token issuer; log in instead")
        return await self.bearer.verify_async(token.strip())
