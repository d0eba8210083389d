"""Searching the session collection with Nuvla's parameters: filters, paging, ordering,
selecting."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from conftest import GatewayFactory
from gw_servers import ThreadedServer

from gateway.credentials import ensure_user
from servicekit.db import create_engine, session_factory

Clients = Callable[[ThreadedServer], httpx.AsyncClient]
ADMIN_PASSWORD = "correct horse battery staple"


async def _login(client: httpx.AsyncClient, username: str, password: str) -> str:
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
    assert response.status_code == 201, response.text
    return str(response.json()["resource-id"])


@pytest.fixture
async def admin_sessions(
    make_gateway: GatewayFactory, client_of: Clients
) -> tuple[ThreadedServer, httpx.AsyncClient, list[str]]:
    """A gateway where admin has logged in three times; the client holds the last session."""
    gateway = make_gateway(admin_password=ADMIN_PASSWORD)
    ids = [await _login(client_of(gateway), "admin", ADMIN_PASSWORD) for _ in range(2)]
    client = client_of(gateway)
    ids.append(await _login(client, "admin", ADMIN_PASSWORD))
    return gateway, client, ids


async def test_admin_sees_every_live_session_newest_first(
    admin_sessions: tuple[ThreadedServer, httpx.AsyncClient, list[str]],
) -> None:
    _, client, ids = admin_sessions
    found = (await client.get("/api/session")).json()
    assert found["count"] == 3
    assert [r["id"] for r in found["resources"]] == ids[::-1]


async def test_first_and_last_page_the_sessions_and_count_them_all(
    admin_sessions: tuple[ThreadedServer, httpx.AsyncClient, list[str]],
) -> None:
    _, client, ids = admin_sessions
    page = (await client.get("/api/session?orderby=created:asc&first=2&last=3")).json()
    assert page["count"] == 3
    assert [r["id"] for r in page["resources"]] == ids[1:3]
    counted = (await client.get("/api/session?last=0")).json()
    assert (counted["count"], counted["resources"]) == (3, [])


async def test_select_keeps_the_named_attributes_and_the_id(
    admin_sessions: tuple[ThreadedServer, httpx.AsyncClient, list[str]],
) -> None:
    _, client, _ = admin_sessions
    found = (await client.get("/api/session?select=user,method")).json()
    assert found["resources"][0].keys() == {"id", "resource-type", "user", "method"}


async def test_the_nuvla_put_search_takes_its_parameters_from_the_form_body(
    admin_sessions: tuple[ThreadedServer, httpx.AsyncClient, list[str]],
) -> None:
    _, client, ids = admin_sessions
    response = await client.put(
        "/api/session",
        content=urlencode({"orderby": "created:asc", "last": "1", "select": "user"}),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    found = response.json()
    assert found["count"] == 3
    assert found["resources"] == [{"id": ids[0], "resource-type": "session", "user": "user/admin"}]


async def test_a_user_sees_only_the_current_session(
    admin_sessions: tuple[ThreadedServer, httpx.AsyncClient, list[str]],
    client_of: Clients,
    tmp_path: Path,
) -> None:
    gateway, _, _ = admin_sessions
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'gateway1.sqlite'}")
    try:
        async with session_factory(engine).begin() as session:
            await ensure_user(session=session, user="user/alice", password="pw-alice", groups=[])
    finally:
        await engine.dispose()
    alice = client_of(gateway)
    await _login(client_of(gateway), "alice", "pw-alice")  # another session of alice's
    current = await _login(alice, "alice", "pw-alice")
    found = (await alice.get("/api/session?last=10")).json()
    assert found["count"] == 1
    assert [r["id"] for r in found["resources"]] == [current]


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("filter=token_hash='x'", "token_hash"),
        ("filter=user=='admin'", "=="),
        ("filter=created>'yesterday'", "created"),
        ("filter=user='user/admin' and", "Invalid CIMI filter"),
        ("aggregation=terms:user", "aggregation"),
        ("orderby=token_hash", "orderby"),
        ("orderby=created:sideways", "orderby"),
        ("first=0", "first"),
        ("last=-1", "last"),
        ("first=abc", "first"),
        ("last=10001", "10000"),
    ],
)
async def test_unsupported_or_bad_parameters_get_a_400_saying_which(
    admin_sessions: tuple[ThreadedServer, httpx.AsyncClient, list[str]], query: str, named: str
) -> None:
    _, client, _ = admin_sessions
    response = await client.get(f"/api/session?{query}")
    assert response.status_code == 400
    assert named in response.json()["message"]


async def test_filters_select_sessions_by_their_attributes(
    admin_sessions: tuple[ThreadedServer, httpx.AsyncClient, list[str]],
) -> None:
    _, client, ids = admin_sessions

    async def matching(*filters: str) -> list[str]:
        query = urlencode([("filter", f) for f in filters] + [("orderby", "created:asc")])
        found = (await client.get(f"/api/session?{query}")).json()
        assert found["count"] == len(found["resources"])
        return [r["id"] for r in found["resources"]]

    assert await matching("user='user/admin' and method='password'") == ids
    assert await matching(f"id='{ids[1]}' or id='{ids[2]}'") == ids[1:]
    assert await matching(f"id=['{ids[0]}' '{ids[2]}']") == [ids[0], ids[2]]
    assert await matching("user^='user/'", f"id!='{ids[0]}'") == ids[1:]  # repeated: AND
    assert await matching("identifier!=null", "expiry>2026-01-01T00:00:00Z") == ids
    assert await matching("method='api-key'") == []
    second = (await client.get(f"/api/session?filter=id='{ids[1]}'")).json()["resources"]
    assert await matching(f"created<'{second[0]['created']}'") == ids[:1]
