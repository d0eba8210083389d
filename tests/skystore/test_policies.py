"""Placement policies: the plug-ins themselves, then each one end to end on two real regions."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import pytest
from botocore.exceptions import ClientError

from servicekit.errors import InvalidInput
from servicekit.testing import eventually
from servicekit.testing.metrics import scraped
from services.skystore.locator.eviction import ttl_rule
from services.skystore.policies import POLICIES, choose_read, policy
from services.skystore.schemas import Bucket, Link, Locator, PhysicalBucket, Region

EDGE, CLOUD = "local:edge", "local:cloud"
T0 = datetime(2026, 11, 22, tzinfo=UTC)


def _bucket(name: str) -> Bucket:
    physical = [PhysicalBucket(region=r, name=f"p-{r}", status="ready") for r in (CLOUD, EDGE)]
    return Bucket(
        id=1,
        name="b",
        owner="user/a",
        acl={},
        policy=name,
        base_region=EDGE,
        status="ready",
        created=T0,
        physical=physical,
    )


def _copy(region: str, *, base: bool = False, status: str = "ready") -> Locator:
    return Locator(
        id=hash(region) % 1000,
        region=region,
        physical_bucket="p",
        physical_key="k",
        status=status,
        is_base=base,
        last_access=T0,
    )


def test_policies_are_plug_ins_selected_by_name() -> None:
    assert set(POLICIES) == {"write_local", "replicate_all", "push", "copy_on_read"}
    with pytest.raises(InvalidInput):
        policy("everywhere")


def test_write_local_push_and_copy_on_read_write_where_the_client_is() -> None:
    for name in ("write_local", "push", "copy_on_read"):
        assert policy(name).write_regions(_bucket(name), CLOUD) == [CLOUD]


def test_replicate_all_writes_every_region_local_first() -> None:
    assert policy("replicate_all").write_regions(_bucket("replicate_all"), CLOUD) == [CLOUD, EDGE]


def test_reads_prefer_the_local_ready_copy_then_the_nearest() -> None:
    far = {(EDGE, "r3"): (5.0, 0.1), ("far", "r3"): (90.0, 0.01)}
    copies = [_copy("far"), _copy(EDGE), _copy("r3", status="pending")]
    assert choose_read(copies, "r3", lambda s, d: far.get((s, d), (0.0, 0.0))).region == EDGE
    assert (
        choose_read([*copies, _copy("r3")], "r3", lambda s, d: far.get((s, d), (0.0, 0.0))).region
        == "r3"
    )
    assert choose_read([_copy(EDGE, status="pending")], EDGE, lambda s, d: (0, 0)) is None


def test_t_even_is_egress_over_storage_cost_in_months() -> None:
    regions = [
        Region(name=EDGE, endpoint="x", credentials="env:A", storage_cost=0.02),
        Region(name=CLOUD, endpoint="x", credentials="env:A", storage_cost=0.045),
    ]
    links = [Link(src=EDGE, dst=CLOUD, latency_ms=20, egress_cost=0.09)]
    rule = ttl_rule("t_even", fixed=timedelta(hours=1), regions=regions, links=links)
    assert rule(CLOUD, EDGE) == timedelta(days=30) * 2  # 0.09 / 0.045 = 2 months
    assert rule(EDGE, CLOUD) is None  # no known link back: never evicted
    assert ttl_rule("fixed_ttl", fixed=timedelta(hours=1), regions=[], links=[])(
        CLOUD, EDGE
    ) == timedelta(hours=1)
    assert ttl_rule("none", fixed=timedelta(hours=1), regions=[], links=[])(CLOUD, EDGE) is None


def _physical(physical: Callable[[str], Any], region: str, logical: str) -> dict[str, int]:
    client = physical(region)
    names = [
        b["Name"] for b in client.list_buckets()["Buckets"] if b["Name"].startswith(f"{logical}-")
    ]
    return {
        o["Key"]: o["Size"]
        for n in names
        for o in client.list_objects_v2(Bucket=n).get("Contents", [])
    }


def _make(stack, placement: str) -> str:
    name = f"p-{uuid.uuid4().hex[:12]}"
    stack.client().create_bucket(Bucket=name)
    stack.locator_call("PUT", f"/buckets/{name}/policy", json={"policy": placement})
    return name


def test_replicate_all_puts_a_copy_in_every_region_before_answering(stack, physical) -> None:
    bucket = _make(stack, "replicate_all")
    stack.client(CLOUD).put_object(Bucket=bucket, Key="k", Body=b"everywhere")
    assert list(_physical(physical, EDGE, bucket).values()) == [10]
    assert list(_physical(physical, CLOUD, bucket).values()) == [10]


def _copies(stack, bucket: str, key: str) -> set[tuple[str, str, bool]]:
    info = stack.locator_call("GET", f"/buckets/{bucket}/objects/{key}")
    return {(c["region"], c["status"], c["is_base"]) for c in info["locators"]}


async def test_push_replicates_promptly_on_the_created_event(stack, physical) -> None:
    bucket = await asyncio.to_thread(_make, stack, "push")
    await asyncio.to_thread(stack.client(EDGE).put_object, Bucket=bucket, Key="k", Body=b"pushed")
    # The stack never sweeps by itself (REAPER_INTERVAL=0): only the event can copy it.
    await eventually(
        lambda: _copies(stack, bucket, "k") == {(EDGE, "ready", True), (CLOUD, "ready", False)},
        within=10,
    )
    assert list(_physical(physical, CLOUD, bucket).values()) == [6]
    got = await asyncio.to_thread(stack.client(CLOUD).get_object, Bucket=bucket, Key="k")
    assert got["Body"].read() == b"pushed"


async def test_push_of_an_overwrite_copies_the_new_generation_only(stack, physical) -> None:
    bucket = await asyncio.to_thread(_make, stack, "push")
    s3 = stack.client(EDGE)
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="k", Body=b"one")
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="k", Body=b"second")
    await eventually(
        lambda: _copies(stack, bucket, "k") == {(EDGE, "ready", True), (CLOUD, "ready", False)},
        within=10,
    )
    got = await asyncio.to_thread(stack.client(CLOUD).get_object, Bucket=bucket, Key="k")
    assert got["Body"].read() == b"second"

    def swept() -> bool:
        # The push of generation 1 may still be copying when generation 2's is ready: its
        # replica becomes garbage once complete, and a sweep after that removes it.
        stack.locator_call("POST", "/sweep")
        return list(_physical(physical, CLOUD, bucket).values()) == [6]

    await eventually(lambda: asyncio.to_thread(swept), within=20)


def test_write_local_buckets_are_not_pushed(stack, physical) -> None:
    bucket = _make(stack, "write_local")
    stack.client(EDGE).put_object(Bucket=bucket, Key="k", Body=b"here")
    marker = _make(stack, "push")  # a later push event, handled after this bucket's
    stack.client(EDGE).put_object(Bucket=marker, Key="m", Body=b"m")
    asyncio.run(eventually(lambda: len(_copies(stack, marker, "m")) == 2, within=10))
    assert _copies(stack, bucket, "k") == {(EDGE, "ready", True)}
    assert _physical(physical, CLOUD, bucket) == {}


def test_push_while_nats_is_down_is_caught_up_by_the_sweep(
    tmp_path: Path, run_skystore, physical, nats_server
) -> None:
    nats_server.stop()
    with run_skystore(tmp_path, nats_url=nats_server.url, proxies=(EDGE,)) as down:
        bucket = _make(down, "push")
        down.client(EDGE).put_object(Bucket=bucket, Key="k", Body=b"swept")
        assert _copies(down, bucket, "k") == {(EDGE, "ready", True)}
        swept = down.locator_call("POST", "/sweep")
        assert swept["replicated"] == 1
        assert _copies(down, bucket, "k") == {(EDGE, "ready", True), (CLOUD, "ready", False)}
        assert list(_physical(physical, CLOUD, bucket).values()) == [5]
        # NATS back: the late event is relayed and consumed, and finds nothing left to copy.
        nats_server.start()
        asyncio.run(_wait_for_event(nats_server.url, bucket))
        assert down.locator_call("POST", "/sweep")["replicated"] == 0
        assert _copies(down, bucket, "k") == {(EDGE, "ready", True), (CLOUD, "ready", False)}


async def _wait_for_event(url: str, bucket: str) -> None:
    client = await nats.connect(url)
    try:
        js = client.jetstream()

        async def consumed() -> bool:
            try:
                info = await js.consumer_info("SKYSTORE", "skystore-push")
            except nats.js.errors.NotFoundError:
                return False
            return (
                info.num_pending == 0
                and info.num_ack_pending == 0
                and info.delivered.stream_seq > 0
            )

        await eventually(consumed, within=20)
    finally:
        await client.close()


def test_copy_on_read_of_a_range_keeps_the_whole_object(stack, physical) -> None:
    bucket = _make(stack, "copy_on_read")
    payload = bytes(range(256)) * 400
    stack.client(EDGE).put_object(Bucket=bucket, Key="k", Body=payload)
    assert _physical(physical, CLOUD, bucket) == {}
    part = stack.client(CLOUD).get_object(Bucket=bucket, Key="k", Range="bytes=100-199")
    assert part["Body"].read() == payload[100:200]
    assert list(_physical(physical, CLOUD, bucket).values()) == [len(payload)]
    info = stack.locator_call("GET", f"/buckets/{bucket}/objects/k")
    assert {(c["region"], c["status"], c["is_base"]) for c in info["locators"]} == {
        (EDGE, "ready", True),
        (CLOUD, "ready", False),
    }
    whole = stack.client(CLOUD).get_object(Bucket=bucket, Key="k")["Body"].read()
    assert whole == payload


def _replica_touches(stack) -> int:  # type: ignore[no-untyped-def]
    counts = scraped(stack.locator.url, "http_requests_total", by="route", method="POST")
    return int(counts["/replicas/{locator_id}/read"])


def test_a_replica_read_often_is_touched_once_a_second(stack) -> None:
    bucket = _make(stack, "copy_on_read")
    stack.client(EDGE).put_object(Bucket=bucket, Key="k", Body=b"read often")
    cloud = stack.client(CLOUD)
    assert cloud.get_object(Bucket=bucket, Key="k")["Body"].read() == b"read often"  # copies
    time.sleep(1.1)
    before = _replica_touches(stack)
    began = time.monotonic()
    for _ in range(20):
        assert cloud.get_object(Bucket=bucket, Key="k")["Body"].read() == b"read often"
    seconds = time.monotonic() - began
    # The touches go in the background: wait until those sent have been answered.
    time.sleep(0.5)
    touched = _replica_touches(stack) - before
    assert 1 <= touched <= int(seconds) + 1, (touched, seconds)


def _with_headers(s3: Any, **headers: str) -> Any:
    def add(request: Any, **_: Any) -> None:
        for name, value in headers.items():
            request.headers[name] = value

    s3.meta.events.register("before-sign.s3.CreateBucket", add)
    return s3


def test_ttl_eviction_removes_read_caches_never_the_base_nor_policy_copies(stack, physical) -> None:
    cached = _make(stack, "copy_on_read")
    kept = f"p-{uuid.uuid4().hex[:12]}"  # copy_on_read, but its own eviction: none
    _with_headers(
        stack.client(), **{"x-skystore-placement": "copy_on_read", "x-skystore-eviction": "none"}
    ).create_bucket(Bucket=kept)
    everywhere = _make(stack, "replicate_all")
    pushed = _make(stack, "push")
    for bucket in (cached, kept, everywhere, pushed):
        stack.client(EDGE).put_object(Bucket=bucket, Key="k", Body=b"cached")
    for bucket in (cached, kept):
        stack.client(CLOUD).get_object(Bucket=bucket, Key="k")["Body"].read()
    asyncio.run(eventually(lambda: len(_copies(stack, pushed, "k")) == 2, within=10))
    for bucket in (cached, kept, everywhere, pushed):
        assert len(_physical(physical, CLOUD, bucket)) == 1, bucket
    time.sleep(2.5)  # the stack's replica TTL is 2 s of no reads
    swept = stack.locator_call("POST", "/sweep")
    assert swept["evicted"] >= 1
    assert _physical(physical, CLOUD, cached) == {}
    for bucket in (cached, kept, everywhere, pushed):
        assert len(_physical(physical, EDGE, bucket)) == 1  # every base copy stays
    for bucket in (kept, everywhere, pushed):
        assert len(_physical(physical, CLOUD, bucket)) == 1, bucket
    time.sleep(2.5)
    stack.locator_call("POST", "/sweep")
    assert len(_physical(physical, EDGE, cached)) == 1  # the base copy stays, however old
    assert stack.client(CLOUD).get_object(Bucket=cached, Key="k")["Body"].read() == b"cached"


def test_create_bucket_eviction_headers_are_stored_and_checked(stack) -> None:
    name = f"p-{uuid.uuid4().hex[:12]}"
    _with_headers(stack.client(), **{"x-skystore-replica-ttl": "600"}).create_bucket(Bucket=name)
    eviction = stack.locator_call("GET", f"/buckets/{name}")["eviction"]
    assert eviction == {"eviction": None, "replica_ttl": 600.0}
    for header, value in (("x-skystore-eviction", "sometimes"), ("x-skystore-replica-ttl", "-1")):
        with pytest.raises(ClientError) as refused:
            _with_headers(stack.client(), **{header: value}).create_bucket(
                Bucket=f"p-{uuid.uuid4().hex[:12]}"
            )
        assert refused.value.response["Error"]["Code"] == "InvalidArgument"
        assert refused.value.response["Error"]["ArgumentName"] == header


async def test_object_events_are_published(stack) -> None:
    client = await nats.connect(stack.nats_url)
    seen: list[dict] = []
    subscription = await client.subscribe("skystore.object.>")
    try:
        bucket = await asyncio.to_thread(_make, stack, "write_local")
        s3 = stack.client()
        await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="e", Body=b"evented")
        await asyncio.to_thread(s3.delete_object, Bucket=bucket, Key="e")
        deadline = time.monotonic() + 20
        while len([e for e in seen if e["data"]["bucket"] == bucket]) < 2:
            assert time.monotonic() < deadline, seen
            try:
                message = await subscription.next_msg(timeout=1)
            except TimeoutError:
                continue
            seen.append(json.loads(message.data))
        mine = [e for e in seen if e["data"]["bucket"] == bucket]
        assert [e["type"] for e in mine] == ["skystore.object.created", "skystore.object.deleted"]
        assert mine[0]["data"]["etag"] and mine[0]["data"]["generation"] == 1
    finally:
        await subscription.unsubscribe()
        await client.close()


def test_unknown_policy_header_is_refused(stack) -> None:
    s3 = stack.client()

    def add_header(request: Any, **_: Any) -> None:
        request.headers["x-skystore-placement"] = "nowhere"

    s3.meta.events.register("before-sign.s3.CreateBucket", add_header)
    with pytest.raises(ClientError) as refused:
        s3.create_bucket(Bucket=f"p-{uuid.uuid4().hex[:12]}")
    assert refused.value.response["Error"]["Code"] == "InvalidArgument"
