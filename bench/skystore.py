"""SkyStore benchmark: the S3 proxy vs direct SeaweedFS access, side by side in one run.

    python -m bench.skystore [--small 300] [--medium 40] [--large 16]

Starts two SeaweedFS regions, the locator and one proxy per region (real uvicorn processes),
then measures with the same boto3 client configuration on both paths: PUT and GET of 4 KiB,
1 MiB and 64 MiB objects (throughput, p50/p99), HEAD and LIST latency, and a remote read (an
object written at the edge, read through the cloud proxy) with and without copy_on_read.
4 KiB GETs and HEADs read a working set of keys over and over (the hot path); 4 KiB GETs of
keys not read before are timed apart (the cold path: a locator lookup, over NATS from a proxy
connected to it, over REST from the one without a record cache).
Targets (issue 5): large-object throughput >= 0.85x direct, +p50 on 4 KiB GET <= 2 ms,
HEAD p50 <= 2 ms.

The proxies run as the local stack runs them: with NATS, so they answer HEAD and GET from object
records held under the locator's read leases, reading GETs from the SeaweedFS volume servers
(services/skystore/proxy/seaweed_reads.py) and writing PUTs of 1 MiB and more through its filer
(seaweed_writes.py). A third proxy of the edge region without NATS (every HEAD and GET asks the
locator) shows what the cache saves, a fourth reading and writing through the region's S3
API what the volume reads and filer writes save, in the same run, and a fifth writes the keys
the edge proxy first reads. HEAD and a
1-byte GET are also timed with a bare client (http.client, signed by servicekit.sigv4) on both
paths: botocore's own per-request work is most of a boto3 HEAD here, and the same for both.
GETs of 1 MiB and 64 MiB are timed with that bare client too, reading into one reused buffer:
boto3 builds each body as a new `bytes`, and on two cores shared by the client, the proxy and
SeaweedFS, the client's CPU decides much of a large GET's time on either path.

The paths of a table take turns one operation at a time, in alternating order (direct, proxy,
then proxy, direct, …), so that the machine's drift in speed weighs on each alike. Runs before
2026-12-04 ran each path's operations in one go.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import boto3
import httpx
from botocore.config import Config

from bench._stats import Result, print_table
from servicekit.infra.nats import NatsServer
from servicekit.infra.ports import free_port
from servicekit.infra.seaweed import S3Endpoint, seaweed_access
from servicekit.sigv4 import UNSIGNED_PAYLOAD, sign_request
from servicekit.testing import ServiceProcess
from servicekit.testing.sources import s3_regions

KiB, MiB = 1024, 1024 * 1024
EDGE, CLOUD = "local:edge", "local:cloud"
NO_CACHE = "edge-no-record-cache"
THROUGH_S3 = "edge-through-s3-api"
SECOND = "edge-second"  # another proxy of the edge region: writes the keys first read
HOT_KEYS = 50  # the working set of small GETs


def _client(url: str, key: str, secret: str) -> Any:
    config = Config(
        s3={"addressing_style": "path"},
        signature_version="s3v4",
        max_pool_connections=4,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=config,
    )


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _BareClient:
    """HEAD and GET over one keep-alive http.client connection, SigV4-signed by servicekit:
    the same minimal client on both paths shows what the proxy adds apart from botocore's
    own per-request work."""

    def __init__(self, url: str, key: str, secret: str) -> None:
        parts = urlsplit(url)
        self._host = parts.netloc
        self._key, self._secret = key, secret
        self._connection = http.client.HTTPConnection(parts.hostname or "", parts.port)
        self._buffer = memoryview(bytearray(MiB))

    def request(self, method: str, bucket: str, key: str) -> bytes:
        response = self._send(method, bucket, key)
        return response.read()

    def download(self, bucket: str, key: str) -> int:
        """GET an object's bytes into one reused buffer, as a client streaming to disk or to a
        parser would (no 64 MiB `bytes` built per call); how many bytes came."""
        response = self._send("GET", bucket, key)
        received = 0
        while count := response.readinto(self._buffer):
            received += count
        return received

    def _send(self, method: str, bucket: str, key: str) -> http.client.HTTPResponse:
        path = f"/{bucket}/{quote(key)}"
        headers = {"host": self._host}
        headers |= sign_request(
            method=method,
            path=path,
            headers=headers,
            payload_hash=UNSIGNED_PAYLOAD,
            access_key=self._key,
            secret=self._secret,
            region="us-east-1",
            now=datetime.now(UTC),
        )
        try:
            self._connection.request(method, path, headers=headers)
            response = self._connection.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # The server closed the idle keep-alive connection: reconnect once, as clients do.
            self._connection.close()
            self._connection.request(method, path, headers=headers)
            response = self._connection.getresponse()
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: {response.status} {response.read()[:200]!r}")
        return response


@dataclass(frozen=True)
class _Path:
    """One timed path: its name, one operation (given its index), and optionally a process
    whose CPU per operation is noted."""

    name: str
    operation: Callable[[int], Any]
    cpu_of: int | None = None
    note: str = ""


def _side_by_side(paths: list[_Path], count: int, volume: int = 0) -> list[Result]:
    """Each path's `count` operations, the paths taking turns one operation at a time, in
    alternating order (A B, B A, …), so that a drift in the machine's speed weighs on all
    alike; `volume`: bytes per operation, for a MiB/s note."""
    latencies: list[list[float]] = [[] for _ in paths]
    cpu = [0.0] * len(paths)
    for i in range(count):
        order = list(enumerate(paths))
        for index, path in order if i % 2 == 0 else reversed(order):
            before = _cpu_seconds(path.cpu_of) if path.cpu_of else 0.0
            began = time.perf_counter()
            path.operation(i)
            latencies[index].append(time.perf_counter() - began)
            if path.cpu_of:
                cpu[index] += _cpu_seconds(path.cpu_of) - before
    results = []
    for index, path in enumerate(paths):
        seconds = sum(latencies[index])
        note = path.note
        if path.cpu_of:
            note = f"proxy CPU {cpu[index] / count * 1000:,.1f} ms/op {note}".strip()
        if volume:
            note = f"{volume * count / seconds / MiB:,.1f} MiB/s {note}".strip()
        results.append(Result(path.name, count, seconds, latencies[index], note))
    return results


def _timed(
    name: str,
    count: int,
    operation: Callable[[int], Any],
    note: str = "",
    volume: int = 0,
    cpu_of: int | None = None,
) -> Result:
    """`operation` run `count` times; `cpu_of`: a process whose CPU per operation is noted."""
    return _side_by_side([_Path(name, operation, cpu_of, note)], count, volume)[0]


def _start_skystore(
    root: Path, regions: dict[str, S3Endpoint], nats_url: str, stack: ExitStack
) -> dict[str, ServiceProcess]:
    """The locator and the proxies, by name ("locator", the regions, NO_CACHE, THROUGH_S3,
    SECOND), started; all but THROUGH_S3 read GETs from the SeaweedFS volume servers."""
    ini = root / "regions.ini"
    ini.write_text(
        "".join(
            f"[{n}]\naws_access_key_id = {e.access_key}\naws_secret_access_key = {e.secret_key}\n"
            for n, e in regions.items()
        )
    )
    document = {
        "regions": [
            {"name": n, "endpoint": e.url, "credentials": f"file:{ini}#{n}"}
            for n, e in regions.items()
        ],
        "links": [
            {"src": EDGE, "dst": CLOUD, "latency_ms": 20, "egress_cost": 0.09},
            {"src": CLOUD, "dst": EDGE, "latency_ms": 20, "egress_cost": 0.09},
        ],
    }
    (root / "regions.json").write_text(json.dumps(document))
    common = {
        "EXTRACT_HOME": str(root),
        "EXTRACT_SKYSTORE_NATS_URL": nats_url,
        "EXTRACT_SKYSTORE_PROXY_NATS_URL": nats_url,
        "EXTRACT_SKYSTORE_PROXY_LOG_LEVEL": "warning",
        "EXTRACT_SKYSTORE_LOG_LEVEL": "warning",
    }
    port = free_port()
    locator = ServiceProcess(
        "services.skystore.locator",
        root,
        env={
            **common,
            "EXTRACT_SKYSTORE_PORT": str(port),
            "EXTRACT_SKYSTORE_DATABASE_URL": f"sqlite+aiosqlite:///{root / 'locator.sqlite'}",
            "EXTRACT_SKYSTORE_REGIONS_FILE": str(root / "regions.json"),
            "EXTRACT_SKYSTORE_ADMIN_CREDENTIALS": str(root / "s3-credentials"),
        },
        port=port,
    )
    locator.start()
    stack.callback(locator.stop)
    started = {"locator": locator}
    native = {"EXTRACT_SKYSTORE_PROXY_SEAWEEDFS": json.dumps(seaweed_access(regions.values()))}
    proxies = [(region, region, native) for region in regions]
    proxies.append((NO_CACHE, EDGE, {**native, "EXTRACT_SKYSTORE_PROXY_NATS_URL": ""}))
    proxies.append((THROUGH_S3, EDGE, {}))
    proxies.append((SECOND, EDGE, native))
    for name, region, env in proxies:
        port = free_port()
        log_dir = root / name.replace(":", "-")
        log_dir.mkdir()
        proxy = ServiceProcess(
            "services.skystore.proxy",
            log_dir,
            env={
                **common,
                "EXTRACT_SKYSTORE_PROXY_PORT": str(port),
                "EXTRACT_SKYSTORE_PROXY_REGION": region,
                "EXTRACT_SKYSTORE_PROXY_LOCATOR_URL": locator.url,
                **env,
            },
            port=port,
        )
        proxy.start()
        stack.callback(proxy.stop)
        started[name] = proxy
    return started


@dataclass(frozen=True)
class _Clients:
    direct: Any
    proxy: Any
    uncached: Any
    through_s3: Any
    second: Any
    bare_direct: _BareClient
    bare_proxy: _BareClient
    bare_through_s3: _BareClient


def _object_rows(clients: _Clients, size: int, count: int, proxy_pid: int) -> list[list[Result]]:
    """PUT and GET of `size`-byte objects on each path, each group's paths side by side; both
    through the region's S3 API too (the proxy reads its volume servers and writes through its
    filer otherwise); GETs of 1 MiB and more with the bare client too.

    Small GETs read a working set of HOT_KEYS keys over and over, as HEAD does: the proxy
    answers them from records held under read leases and chunk lists it has seen. Then the
    keys nobody has read yet are read once each, directly, through the proxy (keys another
    proxy of the region wrote: a lookup over NATS) and through the proxy without a record cache
    (a lookup over REST): the cold path, a locator lookup included; the chunk list comes with
    the record (the layout the writing proxy recorded)."""
    c = clients
    body = os.urandom(size)
    bucket_direct, bucket_proxy = f"d-{uuid.uuid4().hex[:8]}", f"p-{uuid.uuid4().hex[:8]}"
    c.direct.create_bucket(Bucket=bucket_direct)
    c.proxy.create_bucket(Bucket=bucket_proxy)
    bucket_s3 = f"s-{uuid.uuid4().hex[:8]}"
    c.proxy.create_bucket(Bucket=bucket_s3)
    label = f"{size // MiB} MiB" if size >= MiB else f"{size // KiB} KiB"

    def put(client: Any, bucket: str) -> Callable[[int], Any]:
        return lambda i: client.put_object(Bucket=bucket, Key=f"k{i}", Body=body)

    def get(
        client: Any, bucket: str, key: Callable[[int], str] = "k{}".format
    ) -> Callable[[int], Any]:
        return lambda i: client.get_object(Bucket=bucket, Key=key(i))["Body"].read()

    def hot(i: int) -> str:
        return f"k{i % HOT_KEYS}"

    def unread(i: int) -> str:
        return f"k{HOT_KEYS + i}"

    small = size < MiB
    read = hot if small else "k{}".format

    def download(client: _BareClient, bucket: str) -> Callable[[int], Any]:
        return lambda i: client.download(bucket, f"k{i}")

    groups = [
        _side_by_side(
            [
                _Path(f"direct PUT {label}", put(c.direct, bucket_direct)),
                _Path(f"proxy  PUT {label}", put(c.proxy, bucket_proxy), proxy_pid),
                _Path(f"proxy  PUT {label}, through S3 API", put(c.through_s3, bucket_s3)),
            ],
            count,
            size,
        ),
        _side_by_side(
            [
                _Path(f"direct GET {label}", get(c.direct, bucket_direct, read)),
                _Path(f"proxy  GET {label}", get(c.proxy, bucket_proxy, read), proxy_pid),
                _Path(f"proxy  GET {label}, no record cache", get(c.uncached, bucket_proxy, read)),
                _Path(f"proxy  GET {label}, through S3 API", get(c.through_s3, bucket_proxy, read)),
            ],
            count,
            size,
        ),
    ]
    if small and count > HOT_KEYS:
        # Keys the proxy holds no record of: written through another proxy of its region.
        bucket_second = f"f-{uuid.uuid4().hex[:8]}"
        c.second.create_bucket(Bucket=bucket_second)
        for i in range(count - HOT_KEYS):
            c.second.put_object(Bucket=bucket_second, Key=unread(i), Body=body)
        groups.append(
            _side_by_side(
                [
                    _Path(f"direct GET {label}, first read", get(c.direct, bucket_direct, unread)),
                    _Path(
                        f"proxy  GET {label}, first read",
                        get(c.proxy, bucket_second, unread),
                        proxy_pid,
                    ),
                    _Path(
                        f"proxy  GET {label}, first read, no record cache",
                        get(c.uncached, bucket_proxy, unread),
                    ),
                ],
                count - HOT_KEYS,
                size,
            )
        )
    elif not small:
        groups.append(
            _side_by_side(
                [
                    _Path(
                        f"direct GET {label}, bare client", download(c.bare_direct, bucket_direct)
                    ),
                    _Path(
                        f"proxy  GET {label}, bare client",
                        download(c.bare_proxy, bucket_proxy),
                        proxy_pid,
                    ),
                    _Path(
                        f"proxy  GET {label}, bare, through S3 API",
                        download(c.bare_through_s3, bucket_proxy),
                    ),
                ],
                count,
                size,
            )
        )
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.skystore")
    parser.add_argument("--small", type=int, default=300, help="4 KiB operations")
    parser.add_argument("--medium", type=int, default=40, help="1 MiB operations")
    parser.add_argument("--large", type=int, default=16, help="64 MiB operations")
    args = parser.parse_args()
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-skystore-")))
        regions = stack.enter_context(s3_regions(stack))
        nats = NatsServer(port=free_port(), store_dir=root / "nats", log_path=root / "nats.log")
        nats.start()
        stack.callback(nats.stop)
        processes = _start_skystore(root, regions, nats.url, stack)
        urls = {name: process.url for name, process in processes.items()}
        edge_pid = processes[EDGE].process.pid
        key = httpx.post(
            f"{urls['locator']}/access-keys",
            json={"principal": "user/bench"},
            headers={
                "Authorization": f"Bearer {(root / 'keys' / 'skystore-internal.token').read_text()}"
            },
        ).json()
        edge = regions[EDGE]
        locator = stack.enter_context(
            httpx.Client(
                base_url=urls["locator"],
                headers={
                    "Authorization": "Bearer "
                    + (root / "keys" / "skystore-internal.token").read_text().strip()
                },
            )
        )
        direct = _client(edge.url, edge.access_key, edge.secret_key)
        proxy = _client(urls[EDGE], key["key_id"], key["secret"])
        uncached = _client(urls[NO_CACHE], key["key_id"], key["secret"])
        through_s3 = _client(urls[THROUGH_S3], key["key_id"], key["secret"])
        second = _client(urls[SECOND], key["key_id"], key["secret"])
        cloud_proxy = _client(urls[CLOUD], key["key_id"], key["secret"])
        bare_direct = _BareClient(edge.url, edge.access_key, edge.secret_key)
        bare_proxy = _BareClient(urls[EDGE], key["key_id"], key["secret"])
        bare_through_s3 = _BareClient(urls[THROUGH_S3], key["key_id"], key["secret"])
        clients = _Clients(
            direct, proxy, uncached, through_s3, second, bare_direct, bare_proxy, bare_through_s3
        )
        today = time.strftime("%Y-%m-%d")
        print(f"SkyStore proxy vs direct SeaweedFS; two regions on this machine; {today}")
        for size, count in ((4 * KiB, args.small), (MiB, args.medium), (64 * MiB, args.large)):
            for group in _object_rows(clients, size, count, edge_pid):
                print()
                print_table(group)
        bucket_d, bucket_p = f"h-{uuid.uuid4().hex[:8]}", f"h-{uuid.uuid4().hex[:8]}"
        direct.create_bucket(Bucket=bucket_d)
        proxy.create_bucket(Bucket=bucket_p)
        for i in range(100):
            direct.put_object(Bucket=bucket_d, Key=f"dir/k{i:03d}", Body=b"x")
            proxy.put_object(Bucket=bucket_p, Key=f"dir/k{i:03d}", Body=b"x")
        n = args.small
        print()
        print_table(
            [
                _timed(
                    "direct HEAD",
                    n,
                    lambda i: direct.head_object(Bucket=bucket_d, Key=f"dir/k{i % 100:03d}"),
                ),
                _timed(
                    "proxy  HEAD",
                    n,
                    lambda i: proxy.head_object(Bucket=bucket_p, Key=f"dir/k{i % 100:03d}"),
                    cpu_of=edge_pid,
                ),
                _timed(
                    "proxy  HEAD, no record cache",
                    n,
                    lambda i: uncached.head_object(Bucket=bucket_p, Key=f"dir/k{i % 100:03d}"),
                ),
                # The one locator round trip inside every proxy HEAD and GET, on its own.
                _timed(
                    "locator lookup (REST)",
                    n,
                    lambda i: locator.get(f"/buckets/{bucket_p}/objects/dir%2Fk{i % 100:03d}"),
                    note="inside every proxy HEAD/GET",
                ),
            ]
        )
        print()
        for method, label in (("HEAD", "HEAD"), ("GET", "GET 1 B")):
            print_table(
                [
                    _timed(
                        f"{path} {label}, bare client",
                        n,
                        lambda i, client=client, bucket=bucket, method=method: client.request(
                            method, bucket, f"dir/k{i % 100:03d}"
                        ),
                    )
                    for path, client, bucket in (
                        ("direct", bare_direct, bucket_d),
                        ("proxy ", bare_proxy, bucket_p),
                    )
                ]
            )
            print()
        print_table(
            [
                _timed(
                    "direct LIST 100 keys",
                    n // 3,
                    lambda i: direct.list_objects_v2(Bucket=bucket_d, Prefix="dir/"),
                ),
                _timed(
                    "proxy  LIST 100 keys",
                    n // 3,
                    lambda i: proxy.list_objects_v2(Bucket=bucket_p, Prefix="dir/"),
                ),
            ]
        )
        body = os.urandom(MiB)
        plain = f"r-{uuid.uuid4().hex[:8]}"
        cached = f"c-{uuid.uuid4().hex[:8]}"
        proxy.create_bucket(Bucket=plain)
        proxy.meta.events.register(
            "before-sign.s3.CreateBucket",
            lambda request, **_: request.headers.__setitem__(
                "x-skystore-placement", "copy_on_read"
            ),
        )
        proxy.create_bucket(Bucket=cached)
        for bucket in (plain, cached):
            proxy.put_object(Bucket=bucket, Key="obj", Body=body)
        count = args.medium
        print()
        print_table(
            [
                _timed(
                    "local GET 1 MiB (edge proxy)",
                    count,
                    lambda i: proxy.get_object(Bucket=plain, Key="obj")["Body"].read(),
                    volume=MiB,
                ),
                _timed(
                    "remote GET 1 MiB, write_local (cloud proxy)",
                    count,
                    lambda i: cloud_proxy.get_object(Bucket=plain, Key="obj")["Body"].read(),
                    volume=MiB,
                ),
                _timed(
                    "remote GET 1 MiB, copy_on_read (cloud proxy)",
                    count,
                    lambda i: cloud_proxy.get_object(Bucket=cached, Key="obj")["Body"].read(),
                    volume=MiB,
                    note="first read copies",
                ),
            ]
        )
        metrics = httpx.get(f"{urls[CLOUD]}/metrics").text
        served = [
            line for line in metrics.splitlines() if line.startswith("skystore_bytes_read_total")
        ]
        print()
        print("bytes served by the cloud proxy, by source region:")
        for line in served:
            print("  " + line)


if __name__ == "__main__":
    main()
