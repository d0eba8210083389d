"""Regions with their cost/latency profile, and the S3 access keys (secrets encrypted at rest)."""

from __future__ import annotations

import secrets
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.errors import InvalidInput, NotFound
from servicekit.security.secretbox import SecretBox
from services.skystore.schemas import AccessKey, Link, Region
from services.skystore.tables import access_keys, region_links, regions

__all__ = [
    "create_access_key",
    "delete_access_key",
    "get_access_key",
    "list_links",
    "list_regions",
    "put_link",
    "put_region",
]


async def put_region(session: AsyncSession, *, region: Region, now: datetime) -> Region:
    """Register the region, or update its endpoint, credentials reference and storage cost."""
    if not region.credentials.startswith(("env:", "file:")):
        raise InvalidInput(
            "credentials must be a reference, `env:PREFIX` or `file:/path#profile`, "
            "never the secret itself",
            detail={"credentials": region.credentials.partition(":")[0]},
        )
    values = region.model_dump(exclude={"name"})
    updated = await session.execute(
        sa.update(regions).where(regions.c.name == region.name).values(**values)
    )
    if updated.rowcount == 0:  # type: ignore[attr-defined]
        await session.execute(sa.insert(regions).values(name=region.name, created=now, **values))
    return region


async def list_regions(session: AsyncSession) -> list[Region]:
    result = await session.execute(sa.select(regions).order_by(regions.c.name))
    return [
        Region(
            name=r.name, endpoint=r.endpoint, credentials=r.credentials, storage_cost=r.storage_cost
        )
        for r in result
    ]


async def put_link(session: AsyncSession, *, link: Link) -> Link:
    """Set the latency and egress cost from `src` to `dst`."""
    known = set(
        (
            await session.execute(
                sa.select(regions.c.name).where(regions.c.name.in_([link.src, link.dst]))
            )
        ).scalars()
    )
    if {link.src, link.dst} - known:
        raise InvalidInput(
            f"unknown region in link {link.src} → {link.dst}; register regions first",
            detail={"src": link.src, "dst": link.dst},
        )
    where = (region_links.c.src == link.src, region_links.c.dst == link.dst)
    values = {"latency_ms": link.latency_ms, "egress_cost": link.egress_cost}
    updated = await session.execute(sa.update(region_links).where(*where).values(**values))
    if updated.rowcount == 0:  # type: ignore[attr-defined]
        await session.execute(sa.insert(region_links).values(src=link.src, dst=link.dst, **values))
    return link


async def list_links(session: AsyncSession) -> list[Link]:
    result = await session.execute(
        sa.select(region_links).order_by(region_links.c.src, region_links.c.dst)
    )
    return [
        Link(src=r.src, dst=r.dst, latency_ms=r.latency_ms, egress_cost=r.egress_cost)
        for r in result
    ]


async def create_access_key(
    session: AsyncSession, *, principal: str, secrets_box: SecretBox, now: datetime
) -> AccessKey:
    """A new key pair for `principal`; the secret is stored encrypted with `secrets_box`."""
    if not principal.startswith(("user/", "group/", "service/")):
        raise InvalidInput(
            f"principal {principal!r} must be user/<name>, group/<name> or service/<name>"
        )
    key = AccessKey(
        key_id="SKY" + secrets.token_hex(8).upper(),
        principal=principal,
        secret=secrets.token_urlsafe(30),
    )
    await session.execute(
        sa.insert(access_keys).values(
            key_id=key.key_id,
            principal=principal,
            secret=secrets_box.encrypt(key.secret),
            created=now,
        )
    )
    return key


async def get_access_key(
    session: AsyncSession, *, key_id: str, secrets_box: SecretBox
) -> AccessKey:
    row = (
        await session.execute(sa.select(access_keys).where(access_keys.c.key_id == key_id))
    ).first()
    if row is None:
        raise NotFound(
            f"access key {key_id!r} does not exist",
            code="InvalidAccessKeyId",
            detail={"AWSAccessKeyId": key_id},
        )
    return AccessKey(
        key_id=row.key_id, principal=row.principal, secret=secrets_box.decrypt(row.secret)
    )


async def delete_access_key(session: AsyncSession, *, key_id: str) -> None:
    """Revoke the key: proxies refuse it once their cached copy expires (KEY_CACHE_SECONDS)."""
    deleted = await session.execute(sa.delete(access_keys).where(access_keys.c.key_id == key_id))
    if deleted.rowcount == 0:  # type: ignore[attr-defined]
        raise NotFound(
            f"access key {key_id!r} does not exist",
            code="InvalidAccessKeyId",
            detail={"AWSAccessKeyId": key_id},
        )
