"""Nuvla-style login sessions: a random cookie token whose hash names a stored session."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.tables import sessions
from servicekit.db import utc_now
from servicekit.security import ADMIN_CLAIM, Identity

__all__ = ["SESSION_COOKIE", "LoginSession", "SessionStore"]

# The cookie name the Nuvla server sets; clients and browsers of Nuvla look for it.
SESSION_COOKIE = "com.sixsq.nuvla.cookie"
# How long a looked-up session is trusted without asking the database again; a logout on
# this gateway drops it at once, a logout elsewhere takes at most this long to be seen.
_CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class LoginSession:
    id: str
    identity: Identity
    method: str
    identifier: str
    created: datetime
    expiry: datetime

    def document(self) -> dict[str, Any]:
        """The Nuvla `session` resource."""
        return {
            "id": self.id,
            "resource-type": "session",
            "method": self.method,
            "template": {"href": f"session-template/{self.method}"},
            "identifier": self.identifier,
            "user": self.identity.principal,
            "roles": " ".join(sorted(self.identity.claims)),
            "created": self.created.isoformat(),
            "updated": self.created.isoformat(),
            "expiry": self.expiry.isoformat(),
            "acl": {"owners": [self.identity.principal, ADMIN_CLAIM]},
            "operations": [{"rel": "delete", "href": self.id}],
        }


def _login(row: Any) -> LoginSession:
    return LoginSession(
        row.id,
        Identity(row.principal, frozenset(row.claims)),
        row.method,
        row.identifier,
        row.created,
        row.expiry,
    )


def _token_hash(token: str) -> str:
    # The token is 256 random bits: a fast hash is enough to make a stolen table useless.
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    def __init__(
        self,
        database: async_sessionmaker[AsyncSession],
        *,
        ttl: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self.ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, LoginSession]] = {}

    async def create(
        self, identity: Identity, *, method: str, identifier: str
    ) -> tuple[LoginSession, str]:
        """A new session and the cookie token naming it (returned once, stored hashed)."""
        token = secrets.token_urlsafe(32)
        now = utc_now()
        login = LoginSession(
            id=f"session/{uuid.uuid4()}",
            identity=identity,
            method=method,
            identifier=identifier,
            created=now,
            expiry=now + timedelta(seconds=self.ttl),
        )
        async with self.database.begin() as session:
            await session.execute(
                sessions.insert().values(
                    id=login.id,
                    token_hash=_token_hash(token),
                    principal=identity.principal,
                    claims=sorted(identity.claims),
                    method=method,
                    identifier=identifier,
                    created=login.created,
                    expiry=login.expiry,
                )
            )
        return login, token

    async def lookup(self, token: str) -> LoginSession | None:
        """The live session `token` names, or None (unknown, expired or logged out)."""
        digest = _token_hash(token)
        cached = self._cache.get(digest)
        if cached is not None and self._clock() - cached[0] < _CACHE_SECONDS:
            login = cached[1]
        else:
            login = await self._load(digest)
            if login is None:
                self._cache.pop(digest, None)
                return None
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (self._clock(), login)
        if login.expiry <= utc_now():
            return None
        return login

    async def _load(self, digest: str) -> LoginSession | None:
        async with self.database() as session:
            row = (
                await session.execute(sa.select(sessions).where(sessions.c.token_hash == digest))
            ).first()
        return None if row is None else _login(row)

    async def search(
        self,
        *,
        order: list[sa.ColumnElement[Any]],
        offset: int,
        limit: int,
        session_id: str | None = None,
        where: sa.ColumnElement[bool] | None = None,
    ) -> tuple[int, list[LoginSession]]:
        """(how many live sessions match `where`, one page of them in `order`); only the
        session `session_id` when one is named."""
        live = sessions.c.expiry > utc_now()
        if session_id is not None:
            live = sa.and_(live, sessions.c.id == session_id)
        if where is not None:
            live = sa.and_(live, where)
        async with self.database() as session:
            count = (
                await session.execute(sa.select(sa.func.count()).select_from(sessions).where(live))
            ).scalar_one()
            rows = []
            if limit > 0:
                query = sa.select(sessions).where(live).order_by(*order)
                rows = (await session.execute(query.offset(offset).limit(limit))).all()
        return count, [_login(row) for row in rows]

    async def delete(self, login: LoginSession) -> None:
        async with self.database.begin() as session:
            await session.execute(sessions.delete().where(sessions.c.id == login.id))
        self._cache = {k: v for k, v in self._cache.items() if v[1].id != login.id}

    async def delete_expired(self) -> int:
        async with self.database.begin() as session:
            result = await session.execute(sessions.delete().where(sessions.c.expiry <= utc_now()))
        return result.rowcount or 0
