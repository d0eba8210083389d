"""Users, groups and credentials: API keys (who may log in, with what, as whom) and the records
of SkyStore S3 keys made for users (the key id only; the locator holds the secret)."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.passwords import hash_secret, verify_secret
from gateway.tables import credentials, users
from servicekit.db import utc_now
from servicekit.errors import InvalidInput, NotFound, Unauthorized
from servicekit.security import ADMIN_CLAIM, Identity
from servicekit.security.identity import check_principal

__all__ = [
    "GENERATE_API_KEY",
    "GENERATE_S3_KEY",
    "ApiKey",
    "authenticate_api_key",
    "authenticate_password",
    "bootstrap_admin",
    "check_owner",
    "credential_document",
    "delete_api_key",
    "ensure_user",
    "generate_api_key",
    "get_api_key",
    "record_s3_key",
]

GENERATE_API_KEY = "credential-template/generate-api-key"
GENERATE_S3_KEY = "credential-template/generate-s3-key"
API_KEY, S3_KEY = "api-key", "s3-key"
ADMIN_USER = "user/admin"


@dataclass(frozen=True)
class ApiKey:
    id: str
    owner: str
    claims: tuple[str, ...]
    name: str | None
    description: str | None
    created: datetime
    expiry: datetime | None
    subtype: str = API_KEY
    access_key: str | None = None  # s3-key: the SkyStore key id


def _bad_login() -> Unauthorized:
    # One message for every failure, so a caller cannot tell which half was wrong.
    return Unauthorized("invalid credentials for login")


async def ensure_user(
    *, session: AsyncSession, user: str, password: str | None, groups: list[str]
) -> None:
    """Create `user` or reset its password and groups."""
    check_principal(user)
    for group in groups:
        check_principal(group)
    values = {
        "password_hash": hash_secret(password) if password else None,
        "groups": sorted(set(groups)),
    }
    found = await session.scalar(sa.select(users.c.id).where(users.c.id == user))
    if found is None:
        await session.execute(users.insert().values(id=user, created=utc_now(), **values))
    else:
        await session.execute(users.update().where(users.c.id == user).values(**values))


async def bootstrap_admin(*, session: AsyncSession, password: str) -> None:
    await ensure_user(session=session, user=ADMIN_USER, password=password, groups=[ADMIN_CLAIM])


async def authenticate_password(*, session: AsyncSession, username: str, password: str) -> Identity:
    user = username if username.startswith("user/") else f"user/{username}"
    try:
        check_principal(user)
    except ValueError:
        raise _bad_login() from None
    row = (
        await session.execute(
            sa.select(users.c.password_hash, users.c.groups).where(users.c.id == user)
        )
    ).first()
    if not await verify_secret(password, row.password_hash if row else None) or row is None:
        raise _bad_login()
    return Identity(user, frozenset(row.groups))


async def authenticate_api_key(*, session: AsyncSession, key: str, secret: str) -> Identity:
    row = (
        await session.execute(
            sa.select(
                credentials.c.owner,
                credentials.c.claims,
                credentials.c.secret_hash,
                credentials.c.expiry,
            ).where(credentials.c.id == key, credentials.c.subtype == API_KEY)
        )
    ).first()
    if not await verify_secret(secret, row.secret_hash if row else None) or row is None:
        raise _bad_login()
    if row.expiry is not None and row.expiry <= utc_now():
        raise Unauthorized(f"API key {key} expired at {row.expiry.isoformat()}")
    return Identity(row.owner, frozenset(row.claims))


def _optional_text(document: dict[str, Any], name: str) -> str | None:
    value = document.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidInput(f"template.{name} must be a string")
    return value


async def generate_api_key(
    *, session: AsyncSession, caller: Identity, template: dict[str, Any], body: dict[str, Any]
) -> tuple[ApiKey, str]:
    """A new API key logging in as `caller` with the caller's claims; the secret is returned
    once and only its hash is stored."""
    if caller.principal == Identity.anonymous().principal:
        raise Unauthorized("log in first: an API key is created for the logged-in user")
    ttl = template.get("ttl")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0):
        raise InvalidInput("template.ttl must be a positive number of seconds")
    now = utc_now()
    secret = secrets.token_urlsafe(32)
    key = ApiKey(
        id=f"credential/{uuid.uuid4()}",
        owner=caller.principal,
        claims=tuple(sorted(caller.claims)),
        name=_optional_text(body, "name"),
        description=_optional_text(body, "description"),
        created=now,
        expiry=now + timedelta(seconds=ttl) if ttl else None,
    )
    await session.execute(
        credentials.insert().values(
            id=key.id,
            owner=key.owner,
            claims=list(key.claims),
            secret_hash=hash_secret(secret),
            name=key.name,
            description=key.description,
            created=key.created,
            expiry=key.expiry,
        )
    )
    return key, secret


async def get_api_key(*, session: AsyncSession, key_id: str) -> ApiKey | None:
    row = (
        await session.execute(
            sa.select(
                credentials.c.id,
                credentials.c.owner,
                credentials.c.claims,
                credentials.c.name,
                credentials.c.description,
                credentials.c.created,
                credentials.c.expiry,
                credentials.c.subtype,
                credentials.c.access_key,
            ).where(credentials.c.id == key_id)
        )
    ).first()
    if row is None:
        return None
    return ApiKey(
        row.id,
        row.owner,
        tuple(row.claims),
        row.name,
        row.description,
        row.created,
        row.expiry,
        row.subtype,
        row.access_key,
    )


async def record_s3_key(
    *,
    session: AsyncSession,
    caller: Identity,
    access_key: str,
    template: dict[str, Any],
    body: dict[str, Any],
) -> ApiKey:
    """The credential recording SkyStore key `access_key`, made for `caller`; no secret kept."""
    named = {**body, **{k: template[k] for k in ("name", "description") if k in template}}
    key = ApiKey(
        id=f"credential/{uuid.uuid4()}",
        owner=caller.principal,
        claims=(caller.principal,),  # SkyStore knows the principal only, not its groups
        name=_optional_text(named, "name"),
        description=_optional_text(named, "description"),
        created=utc_now(),
        expiry=None,
        subtype=S3_KEY,
        access_key=access_key,
    )
    await session.execute(
        credentials.insert().values(
            id=key.id,
            owner=key.owner,
            claims=list(key.claims),
            secret_hash=None,
            subtype=S3_KEY,
            access_key=access_key,
            name=key.name,
            description=key.description,
            created=key.created,
            expiry=None,
        )
    )
    return key


def check_owner(key: ApiKey, caller: Identity) -> None:
    if key.owner != caller.principal and not caller.is_admin:
        # Not 403: whether someone else's key exists is not the caller's business.
        raise NotFound(f"{key.id} not found", detail={"resource-id": key.id})


async def delete_api_key(*, session: AsyncSession, key: ApiKey, caller: Identity) -> None:
    check_owner(key, caller)
    await session.execute(credentials.delete().where(credentials.c.id == key.id))


def credential_document(key: ApiKey, caller: Identity) -> dict[str, Any]:
    """The Nuvla `credential` resource (subtype api-key or s3-key) as its owner or an admin
    sees it; never with a secret."""
    check_owner(key, caller)
    document: dict[str, Any] = {
        "id": key.id,
        "resource-type": "credential",
        "subtype": key.subtype,
        "method": f"generate-{key.subtype}",
        "claims": {"identity": key.owner, "roles": " ".join(key.claims)},
        "created": key.created.isoformat(),
        "updated": key.created.isoformat(),
        "acl": {"owners": [key.owner, ADMIN_CLAIM]},
        "operations": [{"rel": "delete", "href": key.id}],
    }
    if key.name is not None:
        document["name"] = key.name
    if key.description is not None:
        document["description"] = key.description
    if key.expiry is not None:
        document["expiry"] = key.expiry.isoformat()
    if key.access_key is not None:
        document["access-key"] = key.access_key
    return document
