"""The gateway app: its own session/credential API, then every other path proxied upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.middleware import Middleware
from starlette.staticfiles import StaticFiles

from gateway.api import gateway_api_router, jwks_router
from gateway.authn import Authenticator
from gateway.credentials import bootstrap_admin
from gateway.edge_headers import EdgeHeadersMiddleware
from gateway.errors import install_gateway_error_handlers
from gateway.identity import IdentityTokens
from gateway.limits import LimitsMiddleware, RateLimiter
from gateway.oidc import OidcVerifier
from gateway.openapi import MergedOpenAPI
from gateway.proxied_paths import ProxiedPaths
from gateway.proxy import ReverseProxy
from gateway.routes import DEFAULT_ROUTES, Route, RoutingTable
from gateway.s3 import S3Listener, s3_app
from gateway.sessions import SESSION_COOKIE, SessionStore
from gateway.settings import GatewaySettings
from gateway.signing import DeviceSignatures, ResponseSigner
from gateway.skystore_keys import SkyStoreKeys
from gateway.upstreams import PoolFactory, Upstream, UpstreamFailure, Upstreams
from servicekit.app import create_service_app
from servicekit.db import create_engine, database_check, session_factory
from servicekit.errors import MethodNotAllowed, NotFound, ServiceUnavailable
from servicekit.migrate import migrate_service_database
from servicekit.security import ANONYMOUS_CLAIM, load_or_create_signing_key
from servicekit.serve import tls_context
from servicekit.upstream_http import ConnectionPool

__all__ = ["MIGRATIONS", "VERSION_TABLE", "create_app"]

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "gateway_alembic_version"
MOBILE_CLIENT = Path(__file__).resolve().parent.parent / "clients" / "mobile"
PROXIED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
S3_HINT = "; S3 clients use the gateway's S3 port (EXTRACT_GATEWAY_S3_PORT) with unprefixed paths"


def _upstream_ready(upstream: Upstream):  # type: ignore[no-untyped-def]
    async def check() -> None:
        try:
            status, _ = await upstream.status_of("/readyz", within=2.0)
        except UpstreamFailure as exc:
            raise ServiceUnavailable(f"{upstream.url}: {type(exc).__name__}: {exc}") from None
        if status != 200:
            raise ServiceUnavailable(f"{upstream.url}/readyz answered {status}")

    return check


def _s3_listener(
    app: FastAPI, settings: GatewaySettings, upstreams: Upstreams, per_ip: RateLimiter
) -> S3Listener | None:
    """The S3 port's listener, on the main listener's certificate; None when it is off."""
    if not settings.s3_port:
        return None
    cert, key = settings.tls_files()
    context = tls_context(settings.model_copy(update={"tls_cert": str(cert), "tls_key": str(key)}))
    assert context is not None  # both files are named
    s3 = s3_app(
        upstreams.get("skystore"),
        metrics=app.state.metrics,
        per_ip=per_ip,
        max_header_bytes=settings.max_header_bytes,
    )
    return S3Listener(s3, host=settings.host, port=settings.s3_port, ssl_context=context)


def _bearer_verifier(settings: GatewaySettings) -> OidcVerifier | None:
    if not settings.oidc_jwks_url:
        return None
    return OidcVerifier(
        settings.oidc_jwks_url,
        issuer=settings.oidc_issuer,
        audience=settings.oidc_audience or None,
    )


def _add_edge_middleware(app: FastAPI, settings: GatewaySettings, per_ip: RateLimiter) -> None:
    # Inside the chassis's middleware (request id, tracing, access log, metrics), so that
    # refusals here are logged and counted too; outermost of them the security headers and CORS.
    app.user_middleware += [
        Middleware(
            EdgeHeadersMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=True,
            allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["content-type", "authorization", "accept", "x-request-id"],
            max_age=600,
        ),
        Middleware(LimitsMiddleware, per_ip=per_ip, max_header_bytes=settings.max_header_bytes),
    ]


def create_app(
    settings: GatewaySettings,
    *,
    routes: Iterable[Route] = DEFAULT_ROUTES,
    pool: PoolFactory = ConnectionPool,
) -> FastAPI:
    """The gateway; `pool` makes each upstream's connection pool (tests inject failures)."""
    table = RoutingTable(routes)
    per_ip = RateLimiter(settings.rate_per_ip, settings.burst_per_ip, what="client address")
    per_principal = RateLimiter(
        settings.rate_per_principal, settings.burst_per_principal, what="principal"
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.database_location()
        await migrate_service_database(url, MIGRATIONS, VERSION_TABLE)
        engine = create_engine(url, pool_size=settings.database_pool_size)
        app.state.database = session_factory(engine)
        if settings.admin_password:
            async with app.state.database.begin() as session:
                await bootstrap_admin(session=session, password=settings.admin_password)
        app.state.sessions = SessionStore(app.state.database, ttl=settings.session_ttl)
        await app.state.sessions.delete_expired()
        app.state.authenticator = Authenticator(app.state.sessions, _bearer_verifier(settings))
        tokens = IdentityTokens(
            load_or_create_signing_key(settings.identity_key_location()),
            ttl=settings.identity_token_ttl,
            issuer=settings.identity_issuer,
        )
        signer = ResponseSigner(load_or_create_signing_key(settings.signing_key_location()))
        app.state.signer = signer
        upstreams = Upstreams.from_settings(settings, pool)
        app.state.upstreams = upstreams
        app.state.skystore_keys = SkyStoreKeys(
            settings.locator_url,
            settings.locator_token_location(),
            timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout),
        )
        app.state.proxy = ReverseProxy(
            upstreams,
            tokens,
            retries=settings.retries,
            session_cookie=SESSION_COOKIE,
            devices=DeviceSignatures(app.state.database),
            signer=signer,
        )
        app.state.readiness.add("database", database_check(engine))
        for upstream in upstreams:
            app.state.readiness.add(upstream.name, _upstream_ready(upstream))
        app.state.openapi = MergedOpenAPI(app.openapi, upstreams, table)
        upstreams.start_health_checks(settings.health_interval)
        s3_listener = _s3_listener(app, settings, upstreams, per_ip)
        try:
            if s3_listener is not None:
                await s3_listener.start()
            app.state.s3_listener = s3_listener
            yield
        finally:
            if s3_listener is not None:
                await s3_listener.stop()
            await upstreams.close()
            await app.state.skystore_keys.aclose()
            await engine.dispose()

    async def forward_to_route(request: Request) -> Response:
        path = request.scope["path"]
        if request.method not in PROXIED_METHODS:
            raise MethodNotAllowed(
                f"{request.method} is not proxied; use one of {', '.join(sorted(PROXIED_METHODS))}",
                headers={"Allow": ", ".join(sorted(PROXIED_METHODS))},
            )
        route = table.match(path)
        if route is None:
            hint = S3_HINT if path.startswith("/s3/") else ""
            raise NotFound(f"no route for {path}{hint}")
        # Metrics, logs and spans name the route; the gateway's own handlers keep theirs.
        request.scope.setdefault("route", route)
        caller = await request.app.state.authenticator.caller(request)
        if caller.identity.principal != ANONYMOUS_CLAIM:  # anonymous callers: per IP only
            per_principal.check(caller.identity.principal)
        return await request.app.state.proxy.forward(request, route, caller.identity)

    app = create_service_app(
        name="gateway",
        settings=settings,
        routers=[gateway_api_router(), jwks_router()],
        lifespan=lifespan,
    )
    install_gateway_error_handlers(app)
    _add_edge_middleware(app, settings, per_ip)
    app.state.forward_to_route = forward_to_route

    async def merged_openapi(request: Request) -> Response:
        return JSONResponse(await request.app.state.openapi.document())

    # Replaces FastAPI's own document, which knows only the gateway's few routes.
    app.router.routes[:] = [
        r for r in app.router.routes if getattr(r, "path", "") != "/openapi.json"
    ]
    app.router.add_route("/openapi.json", merged_openapi, methods=["GET"], include_in_schema=False)
    static = Path(settings.static_dir) if settings.static_dir else MOBILE_CLIENT
    if static.is_dir():
        app.mount("/app", StaticFiles(directory=static, html=True), name="app")
    # Innermost: what the gateway's own routes do not claim is proxied, past FastAPI's router.
    app.user_middleware.append(
        Middleware(ProxiedPaths, own_routes=app.router.routes, forward=forward_to_route)
    )
    return app
