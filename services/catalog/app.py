"""The catalog app: migrations, database and identity verifier at start-up, Nuvla errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from servicekit.app import create_service_app
from servicekit.credential_refs import resolve_credentials
from servicekit.db import create_engine, database_check, is_postgres, session_factory
from servicekit.migrate import migrate_service_database
from servicekit.s3 import s3_check
from servicekit.security import IdentityVerifier, JWKSet, load_or_create_signing_key
from servicekit.security.secretbox import SecretBox
from servicekit.wire_errors import WireFormat
from services.catalog.api import catalog_router
from services.catalog.autocommit import STATEMENTS, StatementPool
from services.catalog.events import EVENT_SIGNER
from services.catalog.messaging import CatalogMessaging
from services.catalog.s3services import (
    S3_CONTEXT,
    DefaultS3Service,
    S3Context,
    ensure_default_service,
)
from services.catalog.sealed import SECRETS
from services.catalog.settings import CatalogSettings
from services.catalog.watchers import SIGHTINGS, WatcherSightings

__all__ = ["MIGRATIONS", "VERSION_TABLE", "create_app"]

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "catalog_alembic_version"


def create_app(settings: CatalogSettings) -> FastAPI:
    """The catalog service; nothing touches the database until the app starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.database_location()
        await migrate_service_database(url, MIGRATIONS, VERSION_TABLE)
        engine = create_engine(url, pool_size=settings.database_pool_size)
        events_key = load_or_create_signing_key(settings.events_key_location())
        app.state.engine = engine
        app.state.events_jwks = JWKSet.of(events_key)
        s3 = _s3_context(settings)
        info = {
            EVENT_SIGNER: events_key,
            SIGHTINGS: WatcherSightings(),
            S3_CONTEXT: s3,
            SECRETS: SecretBox.load_or_create(settings.secrets_key_location()),
        }
        statements = None
        if is_postgres(engine):
            statements = await StatementPool.open(url, settings.database_pool_size)
            info[STATEMENTS] = statements
        app.state.sessions = session_factory(engine, info=info)
        app.state.identity_verifier = IdentityVerifier(
            settings.identity_jwks_location(), issuer=settings.identity_issuer
        )
        app.state.readiness.add("database", database_check(engine))
        if default_s3 := _default_s3_service(settings):
            await ensure_default_service(app.state.sessions, default_s3)
            s3.default_credential = default_s3.credential_id
            app.state.readiness.add("s3", s3_check(default_s3.endpoint_of()))
        messaging = CatalogMessaging(settings, app.state.sessions)
        if settings.nats_url:
            messaging.start()
        try:
            yield
        finally:
            await messaging.stop()
            if statements is not None:
                await statements.close()
            await engine.dispose()

    return create_service_app(
        name="catalog",
        settings=settings,
        routers=[catalog_router()],
        wire_format=WireFormat.NUVLA,
        lifespan=lifespan,
    )


def _s3_context(settings: CatalogSettings) -> S3Context:
    return S3Context(
        default_bucket=settings.s3_bucket,
        check_value_algorithm=settings.check_value_algorithm,
        presign_ttl=min(settings.presign_ttl, settings.presign_max_ttl),
        presign_max_ttl=settings.presign_max_ttl,
    )


def _default_s3_service(settings: CatalogSettings) -> DefaultS3Service | None:
    if not settings.s3_endpoint:
        return None
    access, secret = settings.s3_access_key, settings.s3_secret_key
    if not (access and secret) and settings.s3_credentials:
        access, secret = resolve_credentials(settings.s3_credentials)
    if not (access and secret):
        raise ValueError(
            "EXTRACT_CATALOG_S3_ENDPOINT is set: set EXTRACT_CATALOG_S3_ACCESS_KEY and"
            " EXTRACT_CATALOG_S3_SECRET_KEY, or EXTRACT_CATALOG_S3_CREDENTIALS (or unset the"
            " endpoint)"
        )
    return DefaultS3Service(settings.s3_endpoint, access, secret, settings.s3_region)
