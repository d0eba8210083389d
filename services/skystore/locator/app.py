"""The locator app: migrations, sessions, regions from the settings, the garbage collector."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from servicekit.app import create_service_app
from servicekit.db import Clock, create_engine, database_check, session_factory, utc_now
from servicekit.migrate import migrate_service_database
from servicekit.security.keys import write_file_atomically
from servicekit.security.secretbox import SecretBox
from services.skystore.locator import registry
from services.skystore.locator.api import locator_router
from services.skystore.locator.collector import Collector
from services.skystore.locator.leases import LeaseHorizon, Leases
from services.skystore.locator.lookup import ObjectLookup
from services.skystore.locator.lookup_responder import LookupResponder
from services.skystore.locator.messaging import EventRelay, Subscription
from services.skystore.locator.push import CREATED, PushWorker
from services.skystore.locator.replication import Replicator
from services.skystore.locator.revoker import NatsRevoker
from services.skystore.schemas import Link, Region
from services.skystore.secrets_files import load_or_create_token
from services.skystore.settings import LocatorSettings, internal_token_location

__all__ = ["MIGRATIONS", "VERSION_TABLE", "create_app"]

MIGRATIONS = Path(__file__).parent.with_name("migrations")
VERSION_TABLE = "skystore_alembic_version"


async def _register_regions(app: FastAPI, path: str) -> None:
    document = json.loads(await asyncio.to_thread(Path(path).read_text))
    now = app.state.clock()
    async with app.state.sessions.begin() as session:
        for region in document.get("regions", []):
            await registry.put_region(session, region=Region(**region), now=now)
        for link in document.get("links", []):
            await registry.put_link(session, link=Link(**link))


async def _write_admin_credentials(app: FastAPI, path: Path, settings: LocatorSettings) -> None:
    """A key pair for the admin, in ~/.aws/credentials format, made once."""
    if await asyncio.to_thread(path.exists):
        return
    async with app.state.sessions.begin() as session:
        key = await registry.create_access_key(
            session,
            principal=settings.admin_principal,
            secrets_box=app.state.secrets_box,
            now=app.state.clock(),
        )
    text = (
        f"# SkyStore key pair of {key.principal}\n[default]\n"
        f"aws_access_key_id = {key.key_id}\naws_secret_access_key = {key.secret}\n"
    )
    await asyncio.to_thread(write_file_atomically, path, text.encode(), mode=0o600)


def create_app(settings: LocatorSettings, *, clock: Clock = utc_now) -> FastAPI:
    """The locator service; nothing touches the database until the app starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.database_location()
        await migrate_service_database(url, MIGRATIONS, VERSION_TABLE)
        engine = create_engine(url, pool_size=settings.database_pool_size)
        app.state.clock = clock
        app.state.sessions = session_factory(engine)
        app.state.object_lookup = ObjectLookup(url, app.state.sessions)
        app.state.secrets_box = SecretBox.load_or_create(settings.secrets_key_location())
        app.state.internal_token = load_or_create_token(
            internal_token_location(settings.internal_token)
        )
        app.state.readiness.add("database", database_check(engine))
        revoker = NatsRevoker(
            settings.nats_url,
            timeout=settings.lease_revoke_timeout,
            on_connected=lambda client: responder.listen(client),
        )
        lease_seconds = settings.lease_seconds if settings.nats_url else 0.0
        leases = Leases(lease_seconds, revoker, LeaseHorizon(app.state.sessions))
        await leases.start()
        app.state.leases = leases
        responder = LookupResponder(app.state.internal_token, app.state.object_lookup, leases)
        if settings.nats_url:
            revoker.start()
        if settings.regions_file:
            await _register_regions(app, settings.regions_file)
        if settings.admin_credentials:
            await _write_admin_credentials(app, Path(settings.admin_credentials), settings)
        collector = Collector(
            app.state.sessions,
            pending_timeout=settings.pending_timeout,
            multipart_timeout=settings.multipart_timeout,
            interval=settings.reaper_interval,
            eviction=settings.eviction,
            replica_ttl=settings.replica_ttl,
            clock=clock,
        )
        app.state.collector = collector
        if settings.reaper_interval > 0:
            collector.start()
        pusher = PushWorker(
            app.state.sessions,
            Replicator(app.state.sessions, clock=clock),
            consumer=settings.push_consumer,
            workers=settings.push_workers,
            clock=clock,
        )
        pushes = Subscription(settings.push_consumer, CREATED, pusher.on_created)
        events = EventRelay(settings.nats_url, app.state.sessions, (pushes,))
        app.state.events = events
        if settings.nats_url:
            pusher.start()
            events.start()
        try:
            yield
        finally:
            await events.stop()
            await responder.stop()
            await revoker.stop()
            await leases.stop()
            await pusher.stop()
            await collector.stop()
            app.state.object_lookup.close()
            await engine.dispose()

    return create_service_app(
        name="skystore-locator", settings=settings, routers=[locator_router()], lifespan=lifespan
    )
