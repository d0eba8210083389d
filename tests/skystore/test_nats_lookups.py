"""Object lookups over NATS: the locator answers them as its REST route does (record, lease,
errors, the internal token), proxies ask there first and over REST when no locator answers."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError

from servicekit.errors import NotFound, ServiceUnavailable
from servicekit.events import connect_nats
from servicekit.testing.metrics import scraped
from services.skystore.leases_wire import LEASE_HEADER, Lease
from services.skystore.lookup_wire import LOOKUP_SUBJECT, STATUS_HEADER, LookupRequest
from services.skystore.proxy.nats_lookups import NatsLookups

EDGE, CLOUD = "local:edge", "local:cloud"
LOOKUP_ROUTE = "/buckets/{name}/objects/{key}"


@pytest.fixture
async def nats(stack) -> AsyncIterator[Client]:
    client = await connect_nats(stack.nats_url, name="test-lookups")
    yield client
    await client.close()


def _rest_lookups(locator_url: str) -> int:
    counts = scraped(locator_url, "http_requests_total", by="route", method="GET")
    return counts[LOOKUP_ROUTE]


def _bucket_with_key(stack, body: bytes = b"payload") -> str:  # type: ignore[no-untyped-def]
    edge = stack.client(EDGE)
    bucket = f"nl-{uuid.uuid4().hex[:10]}"
    edge.create_bucket(Bucket=bucket)
    edge.put_object(Bucket=bucket, Key="dir/k", Body=body)
    return bucket


async def _ask(nats: Client, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reply = await nats.request(LOOKUP_SUBJECT, request, timeout=5)
    headers = reply.headers or {}
    return int(headers[STATUS_HEADER]), headers, reply.data


async def _answered(stack, nats: Client, request: bytes):  # type: ignore[no-untyped-def]
    # The locator subscribes once its NATS connection is up, in the background.
    for _ in range(100):
        try:
            return await _ask(nats, request)
        except Exception:  # no responder yet
            await asyncio.sleep(0.05)
    raise AssertionError("the locator never answered a lookup on NATS")


async def test_the_locator_answers_a_lookup_as_its_rest_route_does(stack, nats: Client) -> None:
    bucket = await asyncio.to_thread(_bucket_with_key, stack)
    request = LookupRequest(bucket, "dir/k", "test-holder", stack.token).encode()
    status, headers, body = await _answered(stack, nats, request)
    assert status == 200
    rest = await asyncio.to_thread(stack.locator_call, "GET", f"/buckets/{bucket}/objects/dir%2Fk")
    assert json.loads(body) == rest
    assert rest["size"] == len(b"payload")
    # A holder is granted a lease (once the locator has stored its lease horizon) ...
    for _ in range(100):
        _, headers, _ = await _ask(nats, request)
        if (lease := Lease.from_header(headers.get(LEASE_HEADER))) is not None:
            break
        await asyncio.sleep(0.05)
    assert lease is not None and lease.seconds > 0
    # ... and no holder, no lease.
    unleased = LookupRequest(bucket, "dir/k", None, stack.token).encode()
    status, headers, _ = await _ask(nats, unleased)
    assert status == 200 and LEASE_HEADER not in headers


async def test_lookup_errors_come_back_with_status_and_code(stack, nats: Client) -> None:
    bucket = await asyncio.to_thread(_bucket_with_key, stack)
    await _answered(stack, nats, LookupRequest(bucket, "dir/k", None, stack.token).encode())

    status, _, body = await _ask(nats, LookupRequest(bucket, "nope", None, stack.token).encode())
    assert (status, json.loads(body)["code"]) == (404, "NoSuchKey")
    missing = LookupRequest("no-such-bucket-x", "k", None, stack.token).encode()
    status, _, body = await _ask(nats, missing)
    assert (status, json.loads(body)["code"]) == (404, "NoSuchBucket")

    status, _, body = await _ask(nats, LookupRequest(bucket, "dir/k", None, "wrong").encode())
    assert status == 401 and b"payload" not in body
    status, _, body = await _ask(nats, b"not json")
    assert status == 400 and "JSON" in json.loads(body)["detail"]
    status, _, body = await _ask(nats, json.dumps({"bucket": bucket, "token": "t"}).encode())
    assert status == 400 and "'key'" in json.loads(body)["detail"]


def test_a_proxy_reads_a_key_it_holds_no_record_of_without_the_rest_route(stack) -> None:
    bucket = _bucket_with_key(stack, b"cold read")
    cloud, cloud_url = stack.client(CLOUD), stack.proxies[CLOUD].url

    def looked_up_over_nats() -> bool:
        key = uuid.uuid4().hex
        stack.client(EDGE).put_object(Bucket=bucket, Key=key, Body=key.encode())
        rest_before = _rest_lookups(stack.locator.url)
        records = scraped(cloud_url, "skystore_object_records_total", by="source")
        assert cloud.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()
        used = scraped(cloud_url, "skystore_object_records_total", by="source")
        assert used["locator"] == records["locator"] + 1  # the cloud proxy had no record
        return _rest_lookups(stack.locator.url) == rest_before

    deadline = time.monotonic() + 10  # until the proxy has connected to NATS
    while not looked_up_over_nats():
        assert time.monotonic() < deadline, "lookups never went over NATS"
        time.sleep(0.1)
    with pytest.raises(ClientError) as missing:
        cloud.get_object(Bucket=bucket, Key="never-written")
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"


def test_without_a_locator_on_nats_proxies_look_up_over_rest(
    run_skystore, nats_server, tmp_path: Path
) -> None:
    # The proxies are on NATS; the locator is not (EXTRACT_SKYSTORE_NATS_URL empty).
    with run_skystore(tmp_path, nats_url=nats_server.url, EXTRACT_SKYSTORE_NATS_URL="") as running:
        edge = running.client(EDGE)
        bucket = f"nl-{uuid.uuid4().hex[:10]}"
        edge.create_bucket(Bucket=bucket)
        edge.put_object(Bucket=bucket, Key="k", Body=b"over rest")
        time.sleep(1.0)  # the proxies' NATS connections are up
        before = _rest_lookups(running.locator.url)
        for _ in range(3):
            body = running.client(CLOUD).get_object(Bucket=bucket, Key="k")["Body"].read()
            assert body == b"over rest"
        assert _rest_lookups(running.locator.url) == before + 3


Responder = Callable[[Client, Msg], Awaitable[None]]
PROBE = b"probe"


async def _subscribed(
    client: Client, locator: Client, answer: Callable[[Msg], Awaitable[None]]
) -> None:
    """`answer` subscribed on `locator` once `client`'s requests reach it: a nats-server just
    started now and then answers the first requests after a SUB with no responders."""
    for _ in range(20):
        subscription = await locator.subscribe(LOOKUP_SUBJECT, cb=answer)
        await locator.flush()
        try:
            await client.request(LOOKUP_SUBJECT, PROBE, timeout=2)
            return
        except NoRespondersError:
            await subscription.unsubscribe()
            await asyncio.sleep(0.1)
    raise AssertionError("the stand-in locator's subscription never took")


@asynccontextmanager
async def _lookups_against(
    nats_server, respond: Responder | None, *, wait: float = 2.0
) -> AsyncIterator[NatsLookups]:
    """NatsLookups on a real NATS server where `respond` stands in for the locator."""
    client = await connect_nats(nats_server.url, name="proxy-side")
    locator = await connect_nats(nats_server.url, name="stand-in-locator")
    if respond is not None:

        async def answer(message: Msg) -> None:
            if message.data == PROBE:
                await message.respond(b"")
            else:
                await respond(locator, message)

        await _subscribed(client, locator, answer)
    try:
        yield NatsLookups("token", lambda: client, timeout=wait)
    finally:
        await client.close()
        await locator.close()


async def test_the_proxy_side_asks_over_rest_when_nobody_or_nonsense_answers(
    nats_server, caplog: pytest.LogCaptureFixture
) -> None:
    async with _lookups_against(nats_server, None) as lookups:
        assert await lookups.object("b", "k", None) is None  # no responder
        assert await lookups.object("b", "k", None) is None  # and paused: not asked again

    async def nonsense(locator: Client, message: Msg) -> None:
        await message.respond(b"hello")  # no status header

    async with _lookups_against(nats_server, nonsense) as lookups:
        with caplog.at_level(logging.WARNING, "services.skystore.proxy.nats_lookups"):
            assert await lookups.object("b", "k", None) is None
        assert "not a lookup answer" in caplog.text

    assert await NatsLookups("t", lambda: None, timeout=1).object("b", "k", None) is None


async def test_the_proxy_side_raises_the_locators_errors_and_silence(
    nats_server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "services.skystore.proxy.nats_lookups")  # why, if it fails

    async def not_found(locator: Client, message: Msg) -> None:
        body = json.dumps({"detail": "key 'k' does not exist", "code": "NoSuchKey", "Key": "k"})
        await locator.publish(message.reply, body.encode(), headers={STATUS_HEADER: "404"})

    async with _lookups_against(nats_server, not_found) as lookups:
        with pytest.raises(NotFound) as error:
            await lookups.object("b", "k", None)
        assert error.value.code == "NoSuchKey" and error.value.detail == {"Key": "k"}

    async def silent(locator: Client, message: Msg) -> None:
        return None

    async with _lookups_against(nats_server, silent, wait=1.0) as lookups:
        with pytest.raises(ServiceUnavailable):
            await lookups.object("b", "k", None)
