"""GETs read from the SeaweedFS volume servers (proxy/seaweed_reads.py), relayed (1 MiB and
more) or read whole (small): the bytes, whole and ranged across chunk boundaries, of single and
multipart objects; what cannot be read so falls back to the S3 API; a physical object gone is
missing; a chunk gone mid-body cuts the relay."""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from botocore.exceptions import ClientError

from servicekit.errors import NotFound
from servicekit.infra.ports import free_port
from servicekit.infra.seaweed import S3Endpoint, seaweed_access
from servicekit.socket_relay import RelayError
from servicekit.testing.metrics import scraped
from services.skystore.proxy.seaweed_reads import (
    ChunkedBody,
    NotReadable,
    SeaweedReader,
    chunk_spans,
    entry_of_layout,
    layout_of,
)
from services.skystore.settings import SeaweedAccess

MiB = 1024 * 1024
CHUNK = 4 * MiB  # SeaweedFS's S3 gateway stores a PUT body in chunks of this size


def _bodies(proxy_url: str) -> Counter[str]:
    return scraped(proxy_url, "skystore_bodies_total", by="path", op="get")


def _bucket(stack) -> str:  # type: ignore[no-untyped-def]
    bucket = f"native-{uuid.uuid4().hex[:8]}"
    stack.client().create_bucket(Bucket=bucket)
    return bucket


def test_whole_and_ranged_gets_read_the_volume_servers(seaweed_stack) -> None:  # type: ignore[no-untyped-def]
    stack, _ = seaweed_stack
    body = os.urandom(2 * CHUNK + MiB + 7)  # three chunks, the last short
    bucket = _bucket(stack)
    s3 = stack.client()
    s3.put_object(Bucket=bucket, Key="big/one", Body=body)
    before = _bodies(stack.proxies["local:edge"].url)
    assert s3.get_object(Bucket=bucket, Key="big/one")["Body"].read() == body
    relayed = [
        (CHUNK, 2 * CHUNK - 1),  # exactly the second chunk
        (5, 2 * CHUNK + 100),  # three chunks, partly
    ]
    small = [
        (0, 0),  # the first byte
        (CHUNK - 10, CHUNK + 9),  # across the first boundary
        (len(body) - 1, len(body) - 1),  # the last byte
    ]
    ranges = relayed + small
    for first, last in ranges:
        got = s3.get_object(Bucket=bucket, Key="big/one", Range=f"bytes={first}-{last}")
        assert got["ContentRange"] == f"bytes {first}-{last}/{len(body)}"
        assert got["Body"].read() == body[first : last + 1], (first, last)
    suffix = s3.get_object(Bucket=bucket, Key="big/one", Range="bytes=-100")["Body"].read()
    assert suffix == body[-100:]
    after = _bodies(stack.proxies["local:edge"].url)
    assert after["native"] - before["native"] == len(relayed) + 1
    assert after["native_buffered"] - before["native_buffered"] == len(small) + 1
    assert after["relay"] == before["relay"]
    assert after["buffered"] == before["buffered"]


def test_small_objects_are_read_whole_and_stay_right_after_an_overwrite(seaweed_stack) -> None:  # type: ignore[no-untyped-def]
    stack, _ = seaweed_stack
    bucket = _bucket(stack)
    s3 = stack.client()
    for version in (b"first version", b"second, longer version", b""):
        s3.put_object(Bucket=bucket, Key="small", Body=version)
        assert s3.get_object(Bucket=bucket, Key="small")["Body"].read() == version
    s3.put_object(Bucket=bucket, Key="small", Body=b"0123456789")
    got = s3.get_object(Bucket=bucket, Key="small", Range="bytes=2-4")
    assert got["Body"].read() == b"234"
    s3.delete_object(Bucket=bucket, Key="small")
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket=bucket, Key="small")
    assert caught.value.response["Error"]["Code"] == "NoSuchKey"


def test_concurrent_reads_each_get_their_own_bytes(seaweed_stack) -> None:  # type: ignore[no-untyped-def]
    stack, _ = seaweed_stack
    bucket = _bucket(stack)
    s3 = stack.client(max_pool_connections=16)
    bodies = {f"obj{n}": os.urandom(CHUNK + n * MiB + n) for n in range(4)}
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    reads = [(key, first) for key in bodies for first in (0, CHUNK - 5, 17, 3 * 1024)]

    def read(job: tuple[str, int]) -> bool:
        key, first = job
        body = bodies[key]
        last = len(body) - 1 if first == 0 else min(first + MiB + 9, len(body) - 1)
        got = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={first}-{last}")["Body"]
        return got.read() == body[first : last + 1]

    with ThreadPoolExecutor(max_workers=16) as pool:
        assert all(pool.map(read, reads * 2))


def test_multipart_objects_and_remote_reads_come_whole(seaweed_stack) -> None:  # type: ignore[no-untyped-def]
    stack, _ = seaweed_stack
    bucket = _bucket(stack)
    s3 = stack.client()
    parts = [os.urandom(5 * MiB + 3), os.urandom(3 * MiB)]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    etags = [
        s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=n, Body=part)["ETag"]
        for n, part in enumerate(parts, 1)
    ]
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="mp",
        UploadId=upload,
        MultipartUpload={"Parts": [{"ETag": e, "PartNumber": n} for n, e in enumerate(etags, 1)]},
    )
    body = b"".join(parts)
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == body
    middle = s3.get_object(Bucket=bucket, Key="mp", Range=f"bytes={5 * MiB}-{6 * MiB}")
    assert middle["Body"].read() == body[5 * MiB : 6 * MiB + 1]
    # The cloud proxy reads the edge region's copy (write_local), from its volume servers too.
    cloud = stack.proxies["local:cloud"].url
    before = _bodies(cloud)
    assert stack.client("local:cloud").get_object(Bucket=bucket, Key="mp")["Body"].read() == body
    assert _bodies(cloud)["native"] == before["native"] + 1


def test_a_filer_that_does_not_answer_leaves_the_read_to_the_s3_api(seaweed_stack) -> None:  # type: ignore[no-untyped-def]
    stack, blind = seaweed_stack
    body = os.urandom(CHUNK + 1)
    bucket = _bucket(stack)
    stack.client().put_object(Bucket=bucket, Key="k", Body=body)
    s3 = stack.client(url=blind.url)
    before = _bodies(blind.url)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == body
    assert s3.get_object(Bucket=bucket, Key="k", Range="bytes=3-9")["Body"].read() == body[3:10]
    after = _bodies(blind.url)
    assert after["relay"] - before["relay"] == 1
    assert after["buffered"] - before["buffered"] == 1
    assert after["native"] == after["native_buffered"] == 0


def test_a_recorded_layout_spares_the_filer_lookup(seaweed_stack, s3_regions) -> None:  # type: ignore[no-untyped-def]
    stack, blind = seaweed_stack
    access = seaweed_access(s3_regions.values())["local:edge"]
    dead = f"http://127.0.0.1:{free_port()}"
    no_filer = stack.proxy_process(
        "local:edge",
        "edge-no-filer",
        EXTRACT_SKYSTORE_PROXY_SEAWEEDFS=json.dumps({"local:edge": {**access, "filer": dead}}),
    )
    no_filer.start()
    try:
        bucket = _bucket(stack)
        small, large = os.urandom(4096), os.urandom(CHUNK + MiB)
        s3 = stack.client()
        s3.put_object(Bucket=bucket, Key="small", Body=small)  # through the S3 API
        s3.put_object(Bucket=bucket, Key="large", Body=large)  # through the filer
        for key, size, chunks in (("small", len(small), 1), ("large", len(large), 2)):
            record = stack.locator_call("GET", f"/buckets/{bucket}/objects/{key}")
            layout = json.loads(record["locators"][0]["layout"])
            assert layout["size"] == size and len(layout["chunks"]) == chunks
        # Written by a proxy that cannot reach the filer: no layout recorded.
        stack.client(url=blind.url).put_object(Bucket=bucket, Key="unlaid", Body=small)
        unlaid = stack.locator_call("GET", f"/buckets/{bucket}/objects/unlaid")
        assert unlaid["locators"][0]["layout"] is None

        reader = stack.client(url=no_filer.url)
        before = _bodies(no_filer.url)
        assert reader.get_object(Bucket=bucket, Key="small")["Body"].read() == small
        assert reader.get_object(Bucket=bucket, Key="large")["Body"].read() == large
        ranged = reader.get_object(Bucket=bucket, Key="large", Range=f"bytes={CHUNK - 2}-{CHUNK}")
        assert ranged["Body"].read() == large[CHUNK - 2 : CHUNK + 1]
        assert reader.get_object(Bucket=bucket, Key="unlaid")["Body"].read() == small
        after = _bodies(no_filer.url)
        assert after["native_buffered"] - before["native_buffered"] == 2
        assert after["native"] - before["native"] == 1
        assert after["buffered"] - before["buffered"] == 1  # the unlaid one, through S3
    finally:
        no_filer.stop()


def _reader(s3_regions: dict[str, S3Endpoint], region: str = "local:edge") -> SeaweedReader:
    access = seaweed_access(s3_regions.values())
    if region not in access:
        pytest.skip("the S3 regions are not SeaweedFS run by this test session")
    return SeaweedReader(region, SeaweedAccess(**access[region]), timeout=10)


def _physical_bucket(physical, body: bytes, key: str = "obj") -> str:  # type: ignore[no-untyped-def]
    s3 = physical("local:edge")
    bucket = f"phys-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    return bucket


def _drain(body: ChunkedBody) -> tuple[bytes, RelayError | None]:
    """What `body` relays into a socket, and the error that cut it short, if any."""
    left, right = socket.socketpair()
    received = bytearray()

    def read() -> None:
        while chunk := right.recv(MiB):
            received.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    error = None
    try:
        body.send_to(left.fileno(), 5)
    except RelayError as exc:
        error = exc
    finally:
        left.shutdown(socket.SHUT_WR)
        reader.join()
        left.close()
        right.close()
    return bytes(received), error


async def test_a_physical_object_gone_is_missing(s3_regions, physical) -> None:  # type: ignore[no-untyped-def]
    reader = _reader(s3_regions)
    bucket = _physical_bucket(physical, b"0123456789")
    try:
        assert await reader.read(bucket, "obj", 2, 4, 10) == b"234"
        for read in (reader.read, reader.relayed):
            with pytest.raises(NotFound):
                await read(bucket, "no-such-key", 0, 9, 10)
            with pytest.raises(NotReadable, match="bytes"):
                await read(bucket, "obj", 0, 9, 11)  # the record says another size
        # A chunk list kept from before the object went: its chunk read fails, NotReadable.
        assert await reader.read(bucket, "obj", 0, 9, 10) == b"0123456789"
        _delete_chunk(s3_regions["local:edge"], f"/buckets/{bucket}/obj", 0)
        with pytest.raises(NotReadable):
            await reader.read(bucket, "obj", 0, 9, 10)
    finally:
        await reader.aclose()


def _delete_chunk(endpoint: S3Endpoint, path: str, index: int) -> None:
    """Delete chunk `index` of the filer entry at `path` on its volume server (an S3 delete
    leaves chunks to a background sweep)."""
    entry = httpx.get(f"{endpoint.seaweed_filer}{path}?metadata=true").json()
    file_id = entry["chunks"][index]["file_id"]
    lookup = httpx.get(f"{endpoint.seaweed_master}/dir/lookup?volumeId={file_id.split(',')[0]}")
    server = lookup.json()["locations"][0]["url"]
    httpx.delete(f"http://{server}/{file_id}").raise_for_status()


async def test_a_chunk_gone_mid_body_cuts_the_relay(s3_regions, physical) -> None:  # type: ignore[no-untyped-def]
    reader = _reader(s3_regions)
    body = os.urandom(3 * CHUNK)
    bucket = _physical_bucket(physical, body, "three")
    try:
        whole = await reader.relayed(bucket, "three", 0, len(body) - 1, len(body))
        assert _drain(whole) == (body, None)
        whole.close(consumed=True)
        cut = await reader.relayed(bucket, "three", 0, len(body) - 1, len(body))
        _delete_chunk(s3_regions["local:edge"], f"/buckets/{bucket}/three", 1)
        got, error = _drain(cut)
        cut.close(consumed=False)
        assert isinstance(error, RelayError)
        assert len(got) < len(body)
        assert got == body[: len(got)]
    finally:
        await reader.aclose()


ENTRY = {"FileSize": 10, "Content": None, "Remote": None, "Extended": {}}


def _entry(chunks: list[dict], **fields: object) -> dict:  # type: ignore[type-arg]
    return {**ENTRY, **fields, "chunks": chunks}


def test_chunk_spans_cover_the_range_asked_for() -> None:
    entry = _entry(
        [
            {"file_id": "1,b", "offset": 4, "size": 4},
            {"file_id": "1,a", "size": 4},  # offset 0 is left out, as SeaweedFS writes it
            {"file_id": "1,c", "offset": 8, "size": 2},
        ]
    )
    spans = chunk_spans(entry, 10, 3, 8)
    assert [(s.file_id, s.first, s.last, s.whole) for s in spans] == [
        ("1,a", 3, 3, False),
        ("1,b", 0, 3, True),
        ("1,c", 0, 0, False),
    ]
    assert [s.file_id for s in chunk_spans(entry, 10, 0, 9)] == ["1,a", "1,b", "1,c"]


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        (
            _entry([{"file_id": "1,a", "size": 4}, {"file_id": "1,b", "offset": 6, "size": 4}]),
            "end to end",
        ),
        (
            _entry([{"file_id": "1,a", "size": 6}, {"file_id": "1,b", "offset": 4, "size": 6}]),
            "end to end",
        ),
        (_entry([{"file_id": "1,a", "size": 8}]), "hold 8 bytes"),
        (_entry([{"file_id": "1,a", "size": 10, "is_compressed": True}]), "plain bytes"),
        (_entry([{"file_id": "1,a", "size": 10, "cipher_key": "aGk="}]), "plain bytes"),
        (_entry([{"file_id": "1,a", "size": 10, "is_chunk_manifest": True}]), "plain bytes"),
        (_entry([{"file_id": "1,a", "size": 10}], Content="aGVsbG8="), "content"),
        (
            _entry(
                [{"file_id": "1,a", "size": 10}], Extended={"x-amz-server-side-encryption": "QUVT"}
            ),
            "encrypted",
        ),
        (_entry([{"file_id": "1,a", "size": 10}], FileSize=12), "the record 10"),
    ],
)
def test_entries_not_read_past_the_s3_api(entry: dict, why: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(NotReadable, match=why):
        chunk_spans(entry, 10, 0, 9)
    assert layout_of(entry, 10) is None


def test_a_layout_stands_for_its_entry() -> None:
    entry = _entry([{"file_id": "1,b", "offset": 4, "size": 6}, {"file_id": "1,a", "size": 4}])
    layout = layout_of(entry, 10)
    assert layout is not None
    restored = entry_of_layout(layout)
    assert restored is not None
    assert chunk_spans(restored, 10, 2, 7) == chunk_spans(entry, 10, 2, 7)
    assert layout_of(_entry([]), 0) is None  # an empty object has nothing to lay out
    many = [{"file_id": f"7,{i:030x}", "offset": i, "size": 1} for i in range(1000)]
    assert layout_of(_entry(many, FileSize=1000), 1000) is None  # too long to record
    for malformed in ("", "not json", '{"size": 1}', '{"size": 1, "chunks": [["1,a", 0]]}'):
        assert entry_of_layout(malformed) is None
