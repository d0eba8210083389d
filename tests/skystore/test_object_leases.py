"""Object records cached by proxies under the locator's read leases: hits, revocation before a
write is acknowledged, silent holders waited out, and the horizon kept across restarts."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from nats.aio.client import Client
from nats.aio.msg import Msg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicekit.events import connect_nats
from servicekit.testing.metrics import scraped
from services.skystore.leases_wire import Lease, Revocation, revocation_subject
from services.skystore.locator.leases import LeaseHorizon, Leases
from services.skystore.locator.revoker import NatsRevoker
from services.skystore.proxy.object_cache import ObjectCache
from services.skystore.schemas import ObjectInfo

EDGE, CLOUD = "local:edge", "local:cloud"


def _records(proxy_url: str) -> Counter[str]:
    return scraped(proxy_url, "skystore_object_records_total", by="source")


def _until(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def _bucket(s3) -> str:  # type: ignore[no-untyped-def]
    name = f"lease-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    return name


def test_reads_come_from_the_cache_and_writes_elsewhere_are_seen_at_once(stack) -> None:
    edge, cloud = stack.client(EDGE), stack.client(CLOUD)
    cloud_url = stack.proxies[CLOUD].url
    bucket = _bucket(edge)
    edge.put_object(Bucket=bucket, Key="k", Body=b"one")
    # The proxies connect to NATS in the background: wait until the cloud proxy caches.
    _until(lambda: cloud.head_object(Bucket=bucket, Key="k") and _records(cloud_url)["cache"] > 0)
    before = _records(cloud_url)
    for _ in range(5):
        assert cloud.get_object(Bucket=bucket, Key="k")["Body"].read() == b"one"
    after = _records(cloud_url)
    assert after["cache"] - before["cache"] == 5
    assert after["locator"] == before["locator"]

    edge.put_object(Bucket=bucket, Key="k", Body=b"two, longer")
    # Acknowledged only after the cloud proxy dropped its record: it asks the locator again.
    assert cloud.get_object(Bucket=bucket, Key="k")["Body"].read() == b"two, longer"
    assert _records(cloud_url)["locator"] == after["locator"] + 1

    edge.delete_object(Bucket=bucket, Key="k")
    with pytest.raises(ClientError) as gone:
        cloud.head_object(Bucket=bucket, Key="k")
    assert gone.value.response["Error"]["Code"] == "404"


def test_the_writer_reads_its_own_write_from_the_cache(stack) -> None:
    edge = stack.client(EDGE)
    edge_url = stack.proxies[EDGE].url
    bucket = _bucket(edge)

    def written_then_cached() -> bool:
        key = uuid.uuid4().hex
        edge.put_object(Bucket=bucket, Key=key, Body=key.encode())
        before = _records(edge_url)
        assert edge.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()
        return _records(edge_url)["cache"] == before["cache"] + 1

    _until(written_then_cached)


def test_a_silent_lease_holder_is_waited_out(run_skystore, nats_server, tmp_path: Path) -> None:
    lease = 3.0
    with run_skystore(
        tmp_path, nats_url=nats_server.url, EXTRACT_SKYSTORE_LEASE_SECONDS=str(lease)
    ) as running:
        edge, cloud = running.client(EDGE), running.client(CLOUD)
        bucket = _bucket(edge)
        edge.put_object(Bucket=bucket, Key="k", Body=b"old")
        cloud_url = running.proxies[CLOUD].url
        _until(
            lambda: cloud.head_object(Bucket=bucket, Key="k") and _records(cloud_url)["cache"] > 0
        )
        leased_at = time.monotonic()
        cloud.head_object(Bucket=bucket, Key="k")  # served from the cache: the lease stands
        pid = running.proxies[CLOUD].process.pid or 0
        os.kill(pid, signal.SIGSTOP)  # alive, holding its lease, answering nothing
        try:
            edge.put_object(Bucket=bucket, Key="k", Body=b"new")
            acknowledged = time.monotonic()
        finally:
            os.kill(pid, signal.SIGCONT)
        # The write waited for the lease to run out, not longer than lease + revoke timeout.
        assert acknowledged - leased_at >= lease - 1.0
        assert acknowledged - leased_at < lease + 3.0
        assert cloud.get_object(Bucket=bucket, Key="k")["Body"].read() == b"new"


def test_a_key_read_often_stays_cached_past_its_lease(
    run_skystore, nats_server, tmp_path: Path
) -> None:
    lease = 2.0
    with run_skystore(
        tmp_path, nats_url=nats_server.url, EXTRACT_SKYSTORE_LEASE_SECONDS=str(lease)
    ) as running:
        edge, url = running.client(EDGE), running.proxies[EDGE].url
        bucket = _bucket(edge)
        edge.put_object(Bucket=bucket, Key="k", Body=b"x")
        _until(lambda: edge.head_object(Bucket=bucket, Key="k") and _records(url)["cache"] > 0)
        before, reads = _records(url), 0
        until = time.monotonic() + 3 * lease
        while time.monotonic() < until:  # three leases long, a read every 0.1 s
            edge.head_object(Bucket=bucket, Key="k")
            reads += 1
            time.sleep(0.1)
        after = _records(url)
        # Renewed in the background each time: no read waited on the locator.
        assert after["locator"] == before["locator"]
        assert after["cache"] - before["cache"] == reads


def _info(bucket: str, key: str, etag: str) -> ObjectInfo:
    return ObjectInfo.model_validate(
        {
            "id": 1,
            "uid": "u",
            "bucket": bucket,
            "key": key,
            "generation": 1,
            "status": "ready",
            "owner": "user/alice",
            "size": 1,
            "etag": etag,
            "content_type": "binary/octet-stream",
            "metadata": {},
            "upload_id": None,
            "started": "2026-12-03T00:00:00Z",
            "last_modified": "2026-12-03T00:00:00Z",
        }
    )


def test_the_cache_refuses_records_leased_before_a_revocation_it_has_seen() -> None:
    now = [100.0]
    cache = ObjectCache("h", 2, clock=lambda: now[0])
    cache.listening = True
    cache.revoke(Revocation("b", "k", 7))
    cache.keep(_info("b", "k", "stale"), Lease(10, 6), asked_at=99.0)
    assert cache.get("b", "k") is None  # granted before revocation 7 was sent
    cache.keep(_info("b", "k", "fresh"), Lease(10, 7), asked_at=99.0)
    assert (cached := cache.get("b", "k")) is not None and cached.etag == "fresh"
    now[0] = 108.9
    assert cache.get("b", "k") is not None
    now[0] = 109.0  # the lease counts from when it was asked for, not from when it arrived
    assert cache.get("b", "k") is None


def test_a_record_is_due_for_renewal_once_per_lease_past_two_thirds() -> None:
    now = [0.0]
    cache = ObjectCache("h", 2, clock=lambda: now[0])
    cache.listening = True
    cache.keep(_info("b", "k", "e"), Lease(9, 1), asked_at=0.0)
    now[0] = 5.9
    assert not cache.due("b", "k")
    now[0] = 6.0
    assert cache.due("b", "k")
    assert not cache.due("b", "k")  # asked for once; the answer sets the next time
    assert cache.get("b", "k") is not None
    cache.keep(_info("b", "k", "e"), Lease(9, 2), asked_at=6.0)
    now[0] = 11.9
    assert not cache.due("b", "k")
    now[0] = 12.0
    assert cache.due("b", "k")
    assert not cache.due("b", "other")


def test_the_cache_keeps_nothing_while_deaf_and_stays_within_capacity() -> None:
    cache = ObjectCache("h", 2, clock=lambda: 0.0)
    cache.keep(_info("b", "k", "e"), Lease(10, 0), asked_at=0.0)
    assert cache.asking is None and cache.get("b", "k") is None
    cache.listening = True
    assert cache.asking == "h"
    for key in ("k1", "k2", "k3"):
        cache.keep(_info("b", key, "e"), Lease(10, 0), asked_at=0.0)
    assert cache.get("b", "k1") is None
    assert cache.get("b", "k2") is not None and cache.get("b", "k3") is not None


async def _holder(url: str, name: str, heard: list[Revocation]) -> Client:
    client = await connect_nats(url, name=name)

    async def answer(message: Msg) -> None:
        heard.append(Revocation.decode(message.data))
        await message.respond(b"")

    await client.subscribe(revocation_subject(name), cb=answer)
    await client.flush()
    return client


async def _ready_leases(
    sessions: async_sessionmaker[AsyncSession], revoker: NatsRevoker, seconds: float
) -> Leases:
    leases = Leases(seconds, revoker, LeaseHorizon(sessions))
    await leases.start()
    for _ in range(200):  # the revoker connects and the horizon is stored in the background
        if leases.grant("probe", "-", "-") is not None:
            return leases
        await asyncio.sleep(0.02)
    raise AssertionError("no lease was ever granted")


async def test_revocation_reaches_holders_and_orders_written_records(
    sessions: async_sessionmaker[AsyncSession], nats_server
) -> None:
    revoker = NatsRevoker(nats_server.url, timeout=0.5)
    revoker.start()
    heard: list[Revocation] = []
    holder = await _holder(nats_server.url, "reader", heard)
    try:
        leases = await _ready_leases(sessions, revoker, seconds=5.0)
        granted = leases.grant("reader", "b", "k")
        assert granted is not None
        began = time.monotonic()
        await leases.revoke("b", "k", generation=6)
        assert time.monotonic() - began < 1.0  # answered: no waiting out
        assert heard == [Revocation("b", "k", granted.seq + 1)]
        # A proxy that committed generation 5 gets no lease once 6 is announced.
        assert leases.grant_written("writer", "b", "k", 5) is None
        written = leases.grant_written("writer", "b", "k", 6)
        assert written is not None and written.seq == granted.seq + 1
        await leases.revoke("b", "other", generation=1)
        assert len(heard) == 1  # only holders of the key are told
    finally:
        await holder.close()
        await revoker.stop()


async def test_a_restarted_locator_waits_out_the_horizon_of_the_one_before(
    sessions: async_sessionmaker[AsyncSession], nats_server
) -> None:
    revoker = NatsRevoker(nats_server.url, timeout=0.5)
    revoker.start()
    try:
        first = await _ready_leases(sessions, revoker, seconds=0.5)
        assert first.grant("reader", "b", "k") is not None
        # A new process knows nothing of "reader"'s lease; the stored horizon covers it.
        restarted = Leases(0.5, revoker, LeaseHorizon(sessions))
        await restarted.start()
        began = time.monotonic()
        await restarted.revoke("b", "k", generation=2)
        assert time.monotonic() - began >= 0.5
    finally:
        await revoker.stop()
