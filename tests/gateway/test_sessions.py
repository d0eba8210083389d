"""Nuvla-style login through the gateway: sessions, cookies, API keys, on SQLite and PostgreSQL."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable

import httpx
from conftest import GatewayFactory
from gw_servers import ThreadedServer

from gateway.app import MIGRATIONS, VERSION_TABLE
from gateway.sessions import SessionStore
from gateway.tables import sessions
from servicekit.db import create_engine, session_factory
from servicekit.migrate import migrate_service_database
from servicekit.security import Identity, JWKSet, SigningKey, verify_identity_token

Clients = Callable[[ThreadedServer], httpx.AsyncClient]
ADMIN_PASSWORD = "correct horse battery staple"
GENERATE = {"template": {"href": "credential-template/generate-api-key"}}


async def _login_admin(client: httpx.AsyncClient) -> httpx.Response:
    return await client.post(
        "/api/session",
        json={
            "template": {
                "href": "session-template/password",
                "username": "admin",
                "password": ADMIN_PASSWORD,
            }
        },
    )


def _upstream_identity(response: httpx.Response, key: SigningKey):  # type: ignore[no-untyped-def]
    [token] = [v for k, v in response.json()["headers"] if k == "authorization"]
    return verify_identity_token(
        token.removeprefix("Bearer "), JWKSet.of(key), issuer="extract-gateway"
    )


async def test_password_login_sets_a_secure_session_cookie_that_names_the_caller_upstream(
    make_gateway: GatewayFactory, client_of: Clients, identity_key: SigningKey
) -> None:
    client = client_of(make_gateway(admin_password=ADMIN_PASSWORD))
    response = await _login_admin(client)
    assert response.status_code == 201
    session_id = response.json()["resource-id"]
    assert session_id.startswith("session/")
    assert response.json() == {
        "status": 201,
        "message": f"created {session_id}",
        "resource-id": session_id,
    }
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("com.sixsq.nuvla.cookie=")
    for attribute in ("Secure", "HttpOnly", "SameSite=strict", "Path=/"):
        assert attribute in cookie

    identity = _upstream_identity(await client.get("/test/echo"), identity_key)
    assert identity.principal == "user/admin"
    assert identity.is_admin

    sessions = (await client.get("/api/session")).json()
    assert sessions["count"] == 1
    assert sessions["resources"][0]["id"] == session_id
    assert sessions["resources"][0]["user"] == "user/admin"


async def test_logout_ends_the_session(
    make_gateway: GatewayFactory, client_of: Clients, identity_key: SigningKey
) -> None:
    client = client_of(make_gateway(admin_password=ADMIN_PASSWORD))
    session_id = (await _login_admin(client)).json()["resource-id"]
    stolen = client.cookies["com.sixsq.nuvla.cookie"]
    deleted = await client.delete(f"/api/{session_id}")
    assert deleted.json()["message"] == f"{session_id} deleted"
    assert (await client.get("/api/session")).json()["count"] == 0
    # The old cookie, replayed, is worth nothing now.
    replay = await client.get("/test/echo", headers={"cookie": f"com.sixsq.nuvla.cookie={stolen}"})
    assert _upstream_identity(replay, identity_key).principal == "group/extract-anon"


async def test_wrong_password_and_unknown_user_get_the_same_401(
    make_gateway: GatewayFactory, client_of: Clients
) -> None:
    client = client_of(make_gateway(admin_password=ADMIN_PASSWORD))
    answers = []
    for username, password in (("admin", "wrong"), ("nobody", ADMIN_PASSWORD)):
        response = await client.post(
            "/api/session",
            json={
                "template": {
                    "href": "session-template/password",
                    "username": username,
                    "password": password,
                }
            },
        )
        assert response.status_code == 401
        answers.append(response.json()["message"])
    assert answers[0] == answers[1]
    assert "set-cookie" not in response.headers


async def test_bad_login_requests_are_400_in_nuvla_json(
    make_gateway: GatewayFactory, client_of: Clients
) -> None:
    client = client_of(make_gateway())
    for body in (
        {"template": {"href": "session-template/oidc"}},
        {"template": {"href": "session-template/api-key", "key": "credential/x"}},
        {"no": "template"},
        [],
    ):
        response = await client.post("/api/session", json=body)
        assert response.status_code == 400, body
        assert response.json()["status"] == 400
    assert (await client.post("/api/session", content=b"{not json")).status_code == 400


async def test_api_key_is_generated_once_and_logs_in_as_its_owner(
    make_gateway: GatewayFactory, client_of: Clients, identity_key: SigningKey, database_url: str
) -> None:
    gateway = make_gateway(admin_password=ADMIN_PASSWORD, database_url=database_url)
    admin = client_of(gateway)
    await _login_admin(admin)
    created = await admin.post("/api/credential", json={**GENERATE, "name": "ci"})
    assert created.status_code == 201
    key, secret = created.json()["key"], created.json()["secret"]
    assert key == created.json()["resource-id"]

    document = (await admin.get(f"/api/{key}")).json()
    assert document["subtype"] == "api-key"
    assert document["name"] == "ci"
    assert secret not in str(document)

    robot = client_of(gateway)
    login = await robot.post(
        "/api/session",
        json={"template": {"href": "session-template/api-key", "key": key, "secret": secret}},
    )
    assert login.status_code == 201
    identity = _upstream_identity(await robot.get("/test/echo"), identity_key)
    assert identity.principal == "user/admin"

    wrong = await client_of(gateway).post(
        "/api/session",
        json={"template": {"href": "session-template/api-key", "key": key, "secret": "x" + secret}},
    )
    assert wrong.status_code == 401

    assert (await admin.delete(f"/api/{key}")).status_code == 200
    again = await client_of(gateway).post(
        "/api/session",
        json={"template": {"href": "session-template/api-key", "key": key, "secret": secret}},
    )
    assert again.status_code == 401


async def test_anonymous_callers_get_no_api_key(
    make_gateway: GatewayFactory, client_of: Clients
) -> None:
    response = await client_of(make_gateway()).post("/api/credential", json=GENERATE)
    assert response.status_code == 401
    assert response.json()["status"] == 401


async def test_login_accepts_a_gzip_body_as_the_nuvla_client_sends_with_compress(
    make_gateway: GatewayFactory, client_of: Clients
) -> None:
    body = json.dumps(
        {
            "template": {
                "href": "session-template/password",
                "username": "admin",
                "password": ADMIN_PASSWORD,
            }
        }
    ).encode()
    response = await client_of(make_gateway(admin_password=ADMIN_PASSWORD)).post(
        "/api/session",
        content=gzip.compress(body),
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert response.status_code == 201


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_session_revoked_elsewhere_stops_working_within_five_seconds(
    sqlite_database_url: str,
) -> None:
    await migrate_service_database(sqlite_database_url, MIGRATIONS, VERSION_TABLE)
    engine = create_engine(sqlite_database_url)
    clock = Clock()
    store = SessionStore(session_factory(engine), ttl=3600, clock=clock)
    login, token = await store.create(Identity("user/alice"), method="password", identifier="a")
    assert await store.lookup(token) == login
    async with store.database.begin() as session:  # as another gateway process logging out
        await session.execute(sessions.delete().where(sessions.c.id == login.id))
    clock.now = 4.9
    assert await store.lookup(token) == login  # the documented window
    clock.now = 5.0
    assert await store.lookup(token) is None
    await engine.dispose()


async def test_a_logout_on_this_gateway_ends_the_session_at_once(
    sqlite_database_url: str,
) -> None:
    await migrate_service_database(sqlite_database_url, MIGRATIONS, VERSION_TABLE)
    engine = create_engine(sqlite_database_url)
    store = SessionStore(session_factory(engine), ttl=3600, clock=Clock())
    login, token = await store.create(Identity("user/alice"), method="password", identifier="a")
    assert await store.lookup(token) == login
    await store.delete(login)
    assert await store.lookup(token) is None
    await engine.dispose()
