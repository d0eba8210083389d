"""Change events of the catalog on a real NATS: resource events, data-set membership, signed model
events, subscriptions on NATS and by signed webhook, and no event lost while NATS is down."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import sqlalchemy as sa
import uvicorn
from nats.js.api import ConsumerConfig, DeliverPolicy
from standardwebhooks import Webhook

from servicekit.cloudevents import CloudEvent
from servicekit.errors import Unauthorized
from servicekit.infra import NatsServer, S3Endpoint, free_port
from servicekit.s3 import s3_client
from servicekit.security import ADMIN_CLAIM, JWKSet, verify_event
from servicekit.testing import app_client, eventually
from services.catalog.app import create_app
from services.catalog.settings import CatalogSettings
from services.catalog.tables import catalog_resources

RECORD = {"infrastructure-service": "infrastructure-service/s3-edge"}


def _settings(database_url: str, jwks: Path, nats_url: str, **extra: Any) -> CatalogSettings:
    return CatalogSettings(
        database_url=database_url,
        identity_jwks=str(jwks),
        nats_url=nats_url,
        webhook_retry_delay=0.2,
        **extra,
    )


class Events:
    """Every `catalog.>` message seen on core NATS since the test began."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, CloudEvent]] = []

    async def handle(self, message: Any) -> None:
        self.seen.append((message.subject, CloudEvent.from_json(message.data)))

    def of(self, subject: str, **data: Any) -> list[CloudEvent]:
        return [
            event
            for seen_subject, event in self.seen
            if seen_subject == subject and all(event.data.get(k) == v for k, v in data.items())
        ]


@pytest.fixture
async def events(nats_url: str) -> AsyncIterator[Events]:
    client = await nats.connect(nats_url)
    collected = Events()
    await client.subscribe("catalog.>", cb=collected.handle)
    await client.flush()
    yield collected
    await client.close()


@pytest.fixture
async def catalog(
    sqlite_database_url: str, identity_jwks_path: Path, nats_url: str
) -> AsyncIterator[Any]:
    settings = _settings(
        sqlite_database_url, identity_jwks_path, nats_url, webhook_allow_private_networks=True
    )
    yield create_app(settings)


@pytest.fixture
async def alice(catalog: Any, mint_token: Callable[..., str]) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {mint_token('user/alice')}"}
    async with app_client(catalog, headers=headers) as client:
        yield client


def _bearer(mint_token: Callable[..., str], principal: str, *claims: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(principal, claims)}"}


async def _add(client: httpx.AsyncClient, collection: str, body: dict[str, Any], **kw: Any) -> str:
    response = await client.post(f"/api/{collection}", json=body, **kw)
    assert response.status_code == 201, response.text
    return response.json()["resource-id"]


async def test_a_record_entering_changing_and_leaving_a_data_set_is_announced(
    alice: httpx.AsyncClient, events: Events
) -> None:
    data_set = await _add(alice, "data-set", {"data-record-filter": "tags='flood' and bytes>10"})
    member = await _add(alice, "data-record", {**RECORD, "tags": ["flood"], "bytes": 50})
    outsider = await _add(alice, "data-record", {**RECORD, "tags": ["fire"], "bytes": 50})
    await eventually(lambda: len(events.of("catalog.data-set.changed", **{"data-set": data_set})))

    await alice.put(f"/api/{member}", json={"bytes": 60})  # still a member
    await alice.put(f"/api/{outsider}", json={"bytes": 70})  # never a member
    await alice.put(f"/api/{member}", json={"bytes": 5})  # leaves
    await alice.delete(f"/api/{outsider}")

    def changes() -> list[tuple[str, str]]:
        return [
            (e.data["resource-id"], e.data["change"])
            for e in events.of("catalog.data-set.changed", **{"data-set": data_set})
        ]

    await eventually(lambda: len(changes()) == 3)
    assert changes() == [(member, "entered"), (member, "updated"), (member, "left")]
    created = events.of("catalog.data-record.created", **{"resource-id": member})
    assert created[0].data["resource"]["tags"] == ["flood"]
    assert created[0].subject == member
    await eventually(lambda: events.of("catalog.data-record.deleted", **{"resource-id": outsider}))


async def test_a_refused_write_emits_nothing(alice: httpx.AsyncClient, events: Events) -> None:
    data_set = await _add(alice, "data-set", {"data-record-filter": "name='x'"})
    response = await alice.post("/api/data-record", json={**RECORD, "name": "x", "bytes": -1})
    assert response.status_code == 400
    marker = await _add(alice, "data-record", {**RECORD, "name": "marker"})
    await eventually(lambda: events.of("catalog.data-record.created", **{"resource-id": marker}))
    assert events.of("catalog.data-set.changed", **{"data-set": data_set}) == []


@pytest.fixture
def model_bucket() -> str:
    return f"models-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def alice_with_s3(
    sqlite_database_url: str,
    identity_jwks_path: Path,
    nats_url: str,
    s3_endpoint: S3Endpoint,
    model_bucket: str,
    tmp_path: Path,
    mint_token: Callable[..., str],
) -> AsyncIterator[httpx.AsyncClient]:
    settings = _settings(
        sqlite_database_url,
        identity_jwks_path,
        nats_url,
        s3_endpoint=s3_endpoint.url,
        s3_access_key=s3_endpoint.access_key,
        s3_secret_key=s3_endpoint.secret_key,
        s3_region=s3_endpoint.region,
        s3_bucket=model_bucket,
        secrets_key=str(tmp_path / "keys" / "secrets.key"),
    )
    headers = {"Authorization": f"Bearer {mint_token('user/alice')}"}
    async with app_client(create_app(settings), headers=headers) as client:
        yield client


async def _verified_model(
    client: httpx.AsyncClient, s3_endpoint: S3Endpoint, bucket: str, content: bytes
) -> str:
    """A READY data-object holding `content`, checked against its `.sha256asc` check value."""
    template = {"href": "data-object-template/generic", "object": "flood.onnx", "check-value": True}
    body = {"template": template}
    data_object = await _add(client, "data-object", body)
    upload = await client.post(f"/api/{data_object}/upload")
    assert upload.status_code == 200, upload.text
    async with httpx.AsyncClient() as plain:
        assert (await plain.put(upload.json()["uri"], content=content)).status_code == 200
    stored = (await client.get(f"/api/{data_object}")).json()
    digest = hashlib.sha256(content).hexdigest()
    async with s3_client(s3_endpoint) as s3:
        check_value = f"{digest}  {stored['object']}\n".encode()
        await s3.put_object(Bucket=bucket, Key=stored["check-value"], Body=check_value)
    ready = await client.post(f"/api/{data_object}/ready")
    assert ready.status_code == 200, ready.text
    return data_object


async def test_model_versions_are_announced_signed_by_the_catalogs_key(
    alice_with_s3: httpx.AsyncClient, events: Events, s3_endpoint: S3Endpoint, model_bucket: str
) -> None:
    alice = alice_with_s3
    data_object = await _verified_model(alice, s3_endpoint, model_bucket, b"onnx model bytes")
    model = {
        **RECORD,
        "model:name": "flood-risk",
        "model:version": "3",
        "resource:object": data_object,
    }
    record = await _add(alice, "data-record", model)
    await eventually(lambda: events.of("catalog.model.published", **{"data-record": record}))
    (event,) = events.of("catalog.model.published", **{"data-record": record})
    assert event.data["name"] == "flood-risk" and event.data["version"] == "3"
    jwks = JWKSet.from_json((await alice.get("/api/event-keys")).text)
    verify_event(event, jwks)
    forged = CloudEvent.from_json(event.to_json().replace(b'"3"', b'"4"'))
    with pytest.raises(Unauthorized):
        verify_event(forged, jwks)
    await alice.put(f"/api/{record}", json={"description": "edited"})  # not a new version
    await alice.delete(f"/api/{record}")
    await eventually(lambda: events.of("catalog.data-record.deleted", **{"resource-id": record}))
    assert len(events.of("catalog.model.published", **{"data-record": record})) == 1


async def test_subscribers_hear_only_of_what_they_may_see(
    alice: httpx.AsyncClient, events: Events, mint_token: Callable[..., str]
) -> None:
    bob = _bearer(mint_token, "user/bob")
    data_set = await _add(
        alice,
        "data-set",
        {
            "data-record-filter": "tags='shared'",
            "acl": {"owners": ["user/alice"], "view-meta": ["user/bob"]},
        },
    )
    on_set = await _add(alice, "subscription", {"data-set": data_set}, headers=bob)
    on_filter = await _add(
        alice,
        "subscription",
        {"collection": "data-record", "filter": "name^='obs-'"},
        headers=bob,
    )
    shown = await _add(
        alice,
        "data-record",
        {
            **RECORD,
            "name": "obs-1",
            "tags": ["shared"],
            "acl": {"owners": ["user/alice"], "view-meta": ["user/bob"]},
        },
    )
    hidden = await _add(alice, "data-record", {**RECORD, "name": "obs-2", "tags": ["shared"]})
    subject_set = f"catalog.subscription.{on_set.partition('/')[2]}"
    subject_filter = f"catalog.subscription.{on_filter.partition('/')[2]}"
    await eventually(lambda: events.of(subject_set) and events.of(subject_filter))
    await eventually(lambda: events.of("catalog.data-record.created", **{"resource-id": hidden}))
    for subject in (subject_set, subject_filter):
        (event,) = events.of(subject)
        assert event.data["resource-id"] == shown and event.data["change"] == "entered"
        # view-meta only: bob sees the meta keys, not the data ones.
        assert "name" in event.data["resource"] and "bytes" not in event.data["resource"]
    assert events.of(subject_set)[0].data["data-set"] == data_set


async def test_subscription_input_is_checked_and_its_secret_never_shown(
    catalog: Any, alice: httpx.AsyncClient, mint_token: Callable[..., str]
) -> None:
    data_set = await _add(alice, "data-set", {"data-record-filter": "name='x'"})
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    webhook = {"kind": "webhook", "url": "https://example.org/hook", "secret": secret}
    bad = [
        ({"data-set": data_set, "collection": "data-record"}, "not both"),
        ({}, "either a data-set or a collection"),
        ({"collection": "data-set"}, "collection: expected one of"),
        ({"collection": "data-record", "filter": "name="}, "Invalid CIMI filter"),
        ({"data-set": data_set, "delivery": {"kind": "email"}}, "delivery: expected"),
        ({"data-set": data_set, "delivery": {**webhook, "url": "ftp://x/y"}}, "delivery.url"),
        ({"data-set": data_set, "delivery": {**webhook, "secret": None}}, "delivery.secret"),
        ({"data-set": data_set, "delivery": {**webhook, "secret": "whsec_c2hvcnQ="}}, "24"),
    ]
    for body, message in bad:
        response = await alice.post("/api/subscription", json=body)
        assert response.status_code == 400, body
        assert message in response.json()["message"], (body, response.json())
    stranger = _bearer(mint_token, "user/mallory")
    response = await alice.post("/api/subscription", json={"data-set": data_set}, headers=stranger)
    assert response.status_code == 404
    assert (await alice.get("/api/subscription")).json()["count"] == 0

    subscription = await _add(
        alice,
        "subscription",
        {"data-set": data_set, "delivery": webhook, "subscriber-claims": [ADMIN_CLAIM]},
    )
    stored = (await alice.get(f"/api/{subscription}")).json()
    assert stored["subscriber-claims"] == sorted(["user/alice", "group/extract-anon"])
    edited = await alice.put(f"/api/{subscription}", json={"subscriber-claims": [ADMIN_CLAIM]})
    assert edited.json()["subscriber-claims"] == stored["subscriber-claims"]
    listing = (await alice.get("/api/subscription")).text
    for text in (json.dumps(stored), edited.text, listing):
        assert secret not in text and secret.removeprefix("whsec_") not in text
    assert stored["delivery"] == {"kind": "webhook", "url": "https://example.org/hook"}
    async with catalog.state.sessions() as session:
        statement = sa.select(catalog_resources.c.document)
        row = (await session.execute(statement.where(catalog_resources.c.id == subscription))).one()
    at_rest = json.dumps(row.document)
    assert row.document["webhook-secret"] and secret.removeprefix("whsec_") not in at_rest


class Receiver:
    """A real HTTP endpoint for webhooks: refuses the first `failures` posts with 503."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.received: list[tuple[bytes, dict[str, str]]] = []
        self.refused = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if self.refused < self.failures:
            self.refused += 1
            status = 503
        else:
            status = 204
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            self.received.append((body, headers))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    app = Receiver(failures=2)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started)
    yield app, f"http://127.0.0.1:{port}/hooks/catalog"
    server.should_exit = True
    await task


async def test_webhooks_are_signed_and_retried_until_taken(
    alice: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    endpoint, url = receiver
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    subscription = await _add(
        alice,
        "subscription",
        {
            "collection": "data-record",
            "filter": "name='hooked'",
            "delivery": {"kind": "webhook", "url": url, "secret": secret},
        },
    )
    record = await _add(alice, "data-record", {**RECORD, "name": "hooked"})
    await eventually(lambda: endpoint.received, within=30)
    assert endpoint.refused == 2
    body, headers = endpoint.received[0]
    payload = Webhook(secret).verify(body, headers)
    assert payload["data"]["subscription"] == subscription
    assert payload["data"]["resource-id"] == record
    other = Webhook("whsec_" + base64.b64encode(os.urandom(32)).decode())
    with pytest.raises(Exception, match="No matching signature"):
        other.verify(body, headers)


async def test_no_event_is_lost_while_nats_is_down(
    sqlite_database_url: str,
    identity_jwks_path: Path,
    nats_server: NatsServer,
    mint_token: Callable[..., str],
) -> None:
    app = create_app(_settings(sqlite_database_url, identity_jwks_path, nats_server.url))
    headers = _bearer(mint_token, "user/alice")
    async with app_client(app, headers=headers) as alice:
        data_set = await _add(alice, "data-set", {"data-record-filter": "tags='offline'"})
        nats_server.stop()
        members = [
            await _add(alice, "data-record", {**RECORD, "tags": ["offline"], "n": n})
            for n in range(5)
        ]
        nats_server.start()
        client = await nats.connect(nats_server.url)
        try:
            js = client.jetstream()
            consumer = await js.pull_subscribe(
                "catalog.data-set.changed",
                durable=None,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
            )
            seen: list[str] = []

            async def all_arrived() -> bool:
                try:
                    batch = await consumer.fetch(10, timeout=0.5)
                except TimeoutError:
                    return False
                for message in batch:
                    event = CloudEvent.from_json(message.data)
                    if event.data["data-set"] == data_set:
                        seen.append(event.data["resource-id"])
                    await message.ack()
                return len(seen) >= len(members)

            await eventually(all_arrived, within=30)
            assert seen == members
        finally:
            await client.close()
