"""S3 infrastructure-services and their credentials, Nuvla style: checked on write, secret keys
encrypted at rest (Fernet) and never shown, resolved to an S3Endpoint when a data-object needs
one, and the operator's default S3 service kept in the catalog.

    infrastructure-service  {"subtype": "s3", "endpoint": "http://…", "region": "…"}
    credential              {"subtype": "infrastructure-service-minio", "parent":
                             "infrastructure-service/<uuid>", "access-key": …, "secret-key": …}
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicekit.db import utc_now
from servicekit.errors import ExtractError, Forbidden, InvalidInput, NotFound
from servicekit.infra.seaweed import S3Endpoint
from servicekit.s3 import S3Client, s3_client
from servicekit.security import ADMIN_CLAIM, ANONYMOUS_CLAIM, Identity
from services.catalog import acl, store
from services.catalog.filters import normalize_timestamp
from services.catalog.sealed import secret_box
from services.catalog.tables import catalog_resources

__all__ = [
    "CREDENTIAL",
    "CREDENTIAL_SUBTYPE",
    "INFRASTRUCTURE_SERVICE",
    "S3_CONTEXT",
    "S3_SUBTYPE",
    "SECRET_KEY",
    "DefaultS3Service",
    "S3Context",
    "ensure_default_service",
    "load_resource",
    "prepare_credential",
    "prepare_infrastructure_service",
    "resolve_credential",
    "s3_context",
]

log = logging.getLogger(__name__)

INFRASTRUCTURE_SERVICE = "infrastructure-service"
CREDENTIAL = "credential"
S3_SUBTYPE = "s3"
CREDENTIAL_SUBTYPE = "infrastructure-service-minio"  # Nuvla's S3 credential subtype
SECRET_KEY = "secret-key"
S3_CONTEXT = "catalog.s3"
"""Key of the catalog's S3Context in `session.info` (see session_factory)."""

# Default ids derive from the endpoint, so a restart finds what an earlier start created.
_DEFAULT_NAMESPACE = uuid.UUID("6f3c2a1e-58d4-4b7e-9a51-0c2d7e4b8f10")


@dataclass
class S3Context:
    """What data-objects need to reach S3, shared through `session.info[S3_CONTEXT]`."""

    default_bucket: str
    check_value_algorithm: str
    presign_ttl: int
    presign_max_ttl: int
    default_credential: str | None = None
    client: Callable[[S3Endpoint], S3Client] = s3_client
    """Makes the S3 client of an endpoint; a test may hand in one that fails."""


def s3_context(session: AsyncSession) -> S3Context:
    context = session.info.get(S3_CONTEXT)
    if context is None:
        raise ExtractError(f"server misconfigured: no S3Context in session.info[{S3_CONTEXT!r}]")
    return context


async def load_resource(
    session: AsyncSession, resource_id: str, *, lock: bool = False
) -> dict[str, Any] | None:
    statement = sa.select(catalog_resources.c.document).where(catalog_resources.c.id == resource_id)
    if lock:
        statement = statement.with_for_update()
    document = (await session.execute(statement)).scalar_one_or_none()
    return None if document is None else dict(document)


def _require_string(document: Mapping[str, Any], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{name}: required, a non-empty string", detail={"field": name})
    return value


async def prepare_infrastructure_service(
    session: AsyncSession,
    identity: Identity,
    document: dict[str, Any],
    before: Mapping[str, Any] | None,
) -> None:
    """Only S3 services are known here: `subtype` s3 and an http(s) `endpoint`."""
    if document.get("subtype") != S3_SUBTYPE:
        raise InvalidInput(
            f"subtype: expected {S3_SUBTYPE!r}, the only infrastructure-service kind of the"
            f" catalog, got {document.get('subtype')!r:.40}",
            detail={"field": "subtype"},
        )
    endpoint = urlsplit(_require_string(document, "endpoint"))
    if endpoint.scheme not in ("http", "https") or not endpoint.hostname:
        raise InvalidInput(
            "endpoint: expected an http(s) URL such as https://s3.example.org",
            detail={"field": "endpoint"},
        )


async def prepare_credential(
    session: AsyncSession,
    identity: Identity,
    document: dict[str, Any],
    before: Mapping[str, Any] | None,
) -> None:
    """An S3 credential of an S3 service the caller may see; the secret key is encrypted."""
    if document.get("subtype") != CREDENTIAL_SUBTYPE:
        raise InvalidInput(
            f"subtype: expected {CREDENTIAL_SUBTYPE!r} (S3 access and secret key),"
            f" got {document.get('subtype')!r:.40}",
            detail={"field": "subtype"},
        )
    parent = _require_string(document, "parent")
    _require_string(document, "access-key")
    secret = _require_string(document, SECRET_KEY)
    if before is None or parent != before.get("parent"):
        service = await load_resource(session, parent)
        if service is None or service.get("resource-type") != INFRASTRUCTURE_SERVICE:
            raise InvalidInput(
                f"parent: {parent!r} is no infrastructure-service", detail={"field": "parent"}
            )
        acl.require(identity, service.get("acl", {}), "view-meta", parent)
        if service.get("subtype") != S3_SUBTYPE:
            raise InvalidInput(f"parent: {parent} is not an S3 service", detail={"field": "parent"})
    if before is None or secret != before.get(SECRET_KEY):
        # A changed value is a new plain secret: the stored one is a token nobody is shown.
        document[SECRET_KEY] = secret_box(session).encrypt(secret)


async def resolve_credential(
    session: AsyncSession, credential_id: str, *, identity: Identity | None = None
) -> S3Endpoint:
    """The S3 endpoint and keys of a credential; with `identity`, only if it may use it."""
    credential = await load_resource(session, credential_id)
    if credential is None or credential.get("resource-type") != CREDENTIAL:
        raise InvalidInput(
            f"credential: {credential_id!r} not found", detail={"field": "credential"}
        )
    if identity is not None and not acl.can(identity, credential.get("acl", {}), "view-data"):
        raise Forbidden(
            f"{identity.principal} may not use {credential_id}: it needs view-data on it",
            detail={"right": "view-data", "resource-id": credential_id},
        )
    if credential.get("subtype") != CREDENTIAL_SUBTYPE:
        raise InvalidInput(
            f"credential: {credential_id} is not an S3 credential", detail={"field": "credential"}
        )
    service = await load_resource(session, credential["parent"])
    if service is None:
        raise NotFound(
            f"{credential['parent']}, the service of {credential_id}, no longer exists",
            detail={"resource-id": credential["parent"]},
        )
    return S3Endpoint(
        region=service.get("region") or "",
        url=service["endpoint"],
        access_key=credential["access-key"],
        secret_key=secret_box(session).decrypt(credential[SECRET_KEY]),
    )


@dataclass(frozen=True)
class DefaultS3Service:
    """The operator's S3 service (settings EXTRACT_CATALOG_S3_*), usable by every user."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str = ""

    def endpoint_of(self) -> S3Endpoint:
        return S3Endpoint(self.region, self.endpoint, self.access_key, self.secret_key)

    @property
    def service_id(self) -> str:
        return f"{INFRASTRUCTURE_SERVICE}/{uuid.uuid5(_DEFAULT_NAMESPACE, self.endpoint)}"

    @property
    def credential_id(self) -> str:
        name = f"{self.endpoint}|{self.access_key}"
        return f"{CREDENTIAL}/{uuid.uuid5(_DEFAULT_NAMESPACE, name)}"

    def documents(self) -> tuple[dict[str, Any], dict[str, Any]]:
        # Every caller holds group/extract-anon, but anonymous callers can add no data-object:
        # view-data for it lets every authenticated user use the service; the secret stays
        # hidden from all (it is never shown), the rest of the service is no secret.
        shared = {"owners": [ADMIN_CLAIM], "view-data": [ANONYMOUS_CLAIM]}
        service = {
            "id": self.service_id,
            "resource-type": INFRASTRUCTURE_SERVICE,
            "subtype": S3_SUBTYPE,
            "name": "default S3",
            "description": "the catalog's default S3 service",
            "endpoint": self.endpoint,
            "acl": acl.normalize_acl(shared),
        }
        if self.region:
            service["region"] = self.region
        credential = {
            "id": self.credential_id,
            "resource-type": CREDENTIAL,
            "subtype": CREDENTIAL_SUBTYPE,
            "name": "default S3 credential",
            "parent": self.service_id,
            "access-key": self.access_key,
            "acl": acl.normalize_acl(shared),
        }
        return service, credential


async def ensure_default_service(
    sessions: async_sessionmaker[AsyncSession], default: DefaultS3Service
) -> None:
    """Create or update the default service and credential; nothing changes if they match."""
    async with sessions.begin() as session:
        service, credential = default.documents()
        for wanted in (service, credential):
            stored = await load_resource(session, wanted["id"], lock=True)
            if wanted is credential:
                secret = default.secret_key
                if stored is not None and _decrypts_to(session, stored, secret):
                    wanted[SECRET_KEY] = stored[SECRET_KEY]
                else:
                    wanted[SECRET_KEY] = secret_box(session).encrypt(secret)
            await _store_system_resource(session, stored, wanted)


def _decrypts_to(session: AsyncSession, stored: Mapping[str, Any], secret: str) -> bool:
    try:
        return secret_box(session).decrypt(stored.get(SECRET_KEY, "")) == secret
    except ExtractError:
        return False


async def _store_system_resource(
    session: AsyncSession, stored: Mapping[str, Any] | None, wanted: dict[str, Any]
) -> None:
    now = normalize_timestamp(utc_now())
    if stored is None:
        wanted |= {"created": now, "updated": now, "created-by": ADMIN_CLAIM}
        await store.save(session, before=None, after=wanted)
        log.info("created %s for the default S3 service", wanted["id"])
        return
    if all(stored.get(key) == value for key, value in wanted.items()):
        return
    await store.save(session, before=stored, after={**stored, **wanted, "updated": now})
    log.info("updated %s for the default S3 service", wanted["id"])
