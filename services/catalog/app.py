"""The catalog app: migrations, database and identity verifier at start-up, Nuvla errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from servicekit.app import create_service_app
from servicekit.db import create_engine, database_check, session_factory
from servicekit.migrate import migrate_service_database
from servicekit.security import IdentityVerifier
from servicekit.wire_errors import WireFormat
from services.catalog.api import catalog_router
from services.catalog.settings import CatalogSettings

__all__ = ["MIGRATIONS", "VERSION_TABLE", "create_app"]

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "catalog_alembic_version"


def create_app(settings: CatalogSettings) -> FastAPI:
    """The catalog service; nothing touches the database until the app starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.database_location()
        await migrate_service_database(url, MIGRATIONS, VERSION_TABLE)
        engine = create_engine(url)
        app.state.engine = engine
        app.state.sessions = session_factory(engine)
        app.state.identity_verifier = IdentityVerifier(
            settings.identity_jwks_location(), issuer=settings.identity_issuer
        )
        app.state.readiness.add("database", database_check(engine))
        try:
            yield
        finally:
            await engine.dispose()

    return create_service_app(
        name="catalog",
        settings=settings,
        routers=[catalog_router()],
        wire_format=WireFormat.NUVLA,
        lifespan=lifespan,
    )
