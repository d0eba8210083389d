"""S3 key credentials: made through the gateway by the real SkyStore locator, used with boto3
against the real SkyStore proxy, and revoked again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import sqlalchemy as sa
from botocore.config import Config
from botocore.exceptions import ClientError
from conftest import GatewayFactory
from gw_servers import ThreadedServer
from gw_skystore import KEY_CACHE_SECONDS, SkyStore

from gateway.credentials import ensure_user
from gateway.tables import credentials
from servicekit.db import create_engine, session_factory
from servicekit.infra.ports import free_port

Clients = Callable[[ThreadedServer], httpx.AsyncClient]
ADMIN_PASSWORD = "correct horse battery staple"
GENERATE = {"template": {"href": "credential-template/generate-s3-key"}}


@pytest.fixture
def gateway_db(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 's3-keys-gateway.sqlite'}"


def _gateway(make_gateway: GatewayFactory, skystore: SkyStore, database_url: str) -> ThreadedServer:
    return make_gateway(
        database_url=database_url,
        admin_password=ADMIN_PASSWORD,
        locator_url=skystore.locator.url,
        locator_token=str(skystore.token_file),
    )


async def _add_users(database_url: str, *names: str) -> None:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine).begin() as session:
            for name in names:
                await ensure_user(session=session, user=f"user/{name}", password=name, groups=[])
    finally:
        await engine.dispose()


async def _stored(database_url: str) -> list[Any]:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            return list((await session.execute(sa.select(credentials))).all())
    finally:
        await engine.dispose()


async def _login(client: httpx.AsyncClient, username: str, password: str) -> None:
    template = {"href": "session-template/password", "username": username, "password": password}
    response = await client.post("/api/session", json={"template": template})
    assert response.status_code == 201, response.text


def _s3(skystore: SkyStore, key_id: str, secret: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=skystore.proxy.url,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            retries={"max_attempts": 1},
        ),
    )


async def _user_with_key(
    gateway: ThreadedServer, client_of: Clients, user: str, **template: str
) -> tuple[httpx.AsyncClient, dict[str, Any]]:
    client = client_of(gateway)
    await _login(client, user, user)
    body = {"template": {**GENERATE["template"], **template}}
    response = await client.post("/api/credential", json=body)
    assert response.status_code == 201, response.text
    return client, response.json()


async def test_an_s3_key_made_through_the_gateway_acts_at_skystore_as_its_owner(
    make_gateway: GatewayFactory, client_of: Clients, skystore: SkyStore, database_url: str
) -> None:
    gateway = _gateway(make_gateway, skystore, database_url)
    await _add_users(database_url, "carol")
    _, created = await _user_with_key(gateway, client_of, "carol", name="laptop")
    assert set(created) == {"status", "message", "resource-id", "access-key", "secret-key"}
    assert created["status"] == 201
    assert created["resource-id"].startswith("credential/")

    s3 = _s3(skystore, created["access-key"], created["secret-key"])
    s3.create_bucket(Bucket="carol-s3-key")
    s3.put_object(Bucket="carol-s3-key", Key="k", Body=b"mine")
    assert s3.get_object(Bucket="carol-s3-key", Key="k")["Body"].read() == b"mine"
    bucket = skystore.locator_get("/buckets/carol-s3-key").json()
    assert bucket["owner"] == "user/carol"
    key = skystore.locator_get(f"/access-keys/{created['access-key']}").json()
    assert key["principal"] == "user/carol"
    s3.delete_object(Bucket="carol-s3-key", Key="k")
    s3.delete_bucket(Bucket="carol-s3-key")

    [row] = await _stored(database_url)
    assert (row.id, row.owner, row.subtype) == (created["resource-id"], "user/carol", "s3-key")
    assert row.access_key == created["access-key"]
    assert row.secret_hash is None
    assert created["secret-key"] not in repr(row)


async def test_the_s3_key_credential_is_shown_to_its_owner_and_admins_without_a_secret(
    make_gateway: GatewayFactory, client_of: Clients, skystore: SkyStore, gateway_db: str
) -> None:
    gateway = _gateway(make_gateway, skystore, gateway_db)
    await _add_users(gateway_db, "carol")
    carol, created = await _user_with_key(
        gateway, client_of, "carol", name="laptop", description="for rclone"
    )
    resource = created["resource-id"]
    shown = await carol.get(f"/api/{resource}")
    assert shown.status_code == 200
    document = shown.json()
    assert document["id"] == resource
    assert document["subtype"] == "s3-key"
    assert document["method"] == "generate-s3-key"
    assert document["access-key"] == created["access-key"]
    assert (document["name"], document["description"]) == ("laptop", "for rclone")
    assert document["acl"]["owners"][0] == "user/carol"
    assert created["secret-key"] not in shown.text
    assert not any("secret" in field for field in document)

    admin = client_of(gateway)
    await _login(admin, "admin", ADMIN_PASSWORD)
    as_admin = await admin.get(f"/api/{resource}")
    assert as_admin.status_code == 200
    assert created["secret-key"] not in as_admin.text


async def test_another_user_can_neither_see_nor_delete_an_s3_key(
    make_gateway: GatewayFactory, client_of: Clients, skystore: SkyStore, gateway_db: str
) -> None:
    gateway = _gateway(make_gateway, skystore, gateway_db)
    await _add_users(gateway_db, "carol", "dave")
    _, created = await _user_with_key(gateway, client_of, "carol")
    dave = client_of(gateway)
    await _login(dave, "dave", "dave")
    resource = created["resource-id"]
    assert (await dave.get(f"/api/{resource}")).status_code == 404
    assert (await dave.delete(f"/api/{resource}")).status_code == 404
    assert len(await _stored(gateway_db)) == 1
    assert skystore.locator_get(f"/access-keys/{created['access-key']}").status_code == 200
    _s3(skystore, created["access-key"], created["secret-key"]).list_buckets()


async def test_deleting_an_s3_key_revokes_it_at_skystore_within_the_key_cache_ttl(
    make_gateway: GatewayFactory, client_of: Clients, skystore: SkyStore, gateway_db: str
) -> None:
    gateway = _gateway(make_gateway, skystore, gateway_db)
    await _add_users(gateway_db, "carol")
    carol, created = await _user_with_key(gateway, client_of, "carol")
    s3 = _s3(skystore, created["access-key"], created["secret-key"])
    s3.list_buckets()  # the proxy now holds the key in its cache

    deleted = await carol.delete(f"/api/{created['resource-id']}")
    assert deleted.status_code == 200
    assert deleted.json()["message"] == f"{created['resource-id']} deleted"
    assert await _stored(gateway_db) == []
    assert skystore.locator_get(f"/access-keys/{created['access-key']}").status_code == 404

    deadline = time.monotonic() + KEY_CACHE_SECONDS + 5
    while True:
        try:
            s3.list_buckets()
        except ClientError as exc:
            error = exc.response
            break
        assert time.monotonic() < deadline, "the revoked key still works after the cache TTL"
        await asyncio.sleep(0.1)
    assert error["Error"]["Code"] == "InvalidAccessKeyId"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403


async def test_an_s3_key_is_no_api_key_for_logging_in(
    make_gateway: GatewayFactory, client_of: Clients, skystore: SkyStore, gateway_db: str
) -> None:
    gateway = _gateway(make_gateway, skystore, gateway_db)
    await _add_users(gateway_db, "carol")
    _, created = await _user_with_key(gateway, client_of, "carol")
    template = {
        "href": "session-template/api-key",
        "key": created["resource-id"],
        "secret": created["secret-key"],
    }
    response = await client_of(gateway).post("/api/session", json={"template": template})
    assert response.status_code == 401


async def test_anonymous_callers_get_401_and_no_key(
    make_gateway: GatewayFactory, client_of: Clients, skystore: SkyStore, gateway_db: str
) -> None:
    gateway = _gateway(make_gateway, skystore, gateway_db)
    response = await client_of(gateway).post("/api/credential", json=GENERATE)
    assert response.status_code == 401
    assert "log in" in response.json()["message"]
    assert await _stored(gateway_db) == []


async def test_a_locator_that_does_not_answer_gives_503_and_nothing_is_stored(
    make_gateway: GatewayFactory, client_of: Clients, skystore: SkyStore, gateway_db: str
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    gateway = make_gateway(
        database_url=gateway_db, locator_url=nobody, locator_token=str(skystore.token_file)
    )
    await _add_users(gateway_db, "carol")
    carol = client_of(gateway)
    await _login(carol, "carol", "carol")
    response = await carol.post("/api/credential", json=GENERATE)
    assert response.status_code == 503
    assert f"locator at {nobody} does not answer" in response.json()["message"]
    assert await _stored(gateway_db) == []


async def test_a_failed_revocation_keeps_the_credential_so_it_can_be_retried(
    make_gateway: GatewayFactory, client_of: Clients, skystore: SkyStore, gateway_db: str
) -> None:
    gateway = _gateway(make_gateway, skystore, gateway_db)
    await _add_users(gateway_db, "carol")
    _, created = await _user_with_key(gateway, client_of, "carol")
    # A second gateway on the same database whose locator is down.
    cut_off = make_gateway(
        database_url=gateway_db,
        locator_url=f"http://127.0.0.1:{free_port()}",
        locator_token=str(skystore.token_file),
    )
    carol = client_of(cut_off)
    await _login(carol, "carol", "carol")
    response = await carol.delete(f"/api/{created['resource-id']}")
    assert response.status_code == 503
    assert len(await _stored(gateway_db)) == 1
    assert (await carol.get(f"/api/{created['resource-id']}")).status_code == 200
    assert skystore.locator_get(f"/access-keys/{created['access-key']}").status_code == 200


async def test_without_a_locator_url_the_template_says_s3_keys_are_not_configured(
    make_gateway: GatewayFactory, client_of: Clients, gateway_db: str
) -> None:
    gateway = make_gateway(database_url=gateway_db, locator_url="")
    await _add_users(gateway_db, "carol")
    carol = client_of(gateway)
    await _login(carol, "carol", "carol")
    response = await carol.post("/api/credential", json=GENERATE)
    assert response.status_code == 503
    assert "S3 keys are not configured" in response.json()["message"]
    assert "EXTRACT_GATEWAY_LOCATOR_URL" in response.json()["message"]
    assert await _stored(gateway_db) == []
