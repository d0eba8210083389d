"""Large GETs read from a SeaweedFS region's volume servers, past its S3 gateway and filer.

SeaweedFS serves an S3 GET by relaying every chunk from a volume server through its filer and
its S3 gateway: on this project's machine, 75-110 ms of its CPU per 64 MiB, against 35-40 ms
when the same chunks are read from the volume server (bench/RESULTS.md). A proxy that may
reach the region's filer, master and volume servers (`EXTRACT_SKYSTORE_PROXY_SEAWEEDFS`) asks
the filer for the physical object's chunk list (kept: a physical key is written once), the
master where each volume lives, and relays the chunks' bytes from the volume servers to the
client one after the other (`relayed`).

Only what reads the same either way is read like this: chunks that are plain bytes (not
compressed, encrypted or a manifest of further chunks) laid end to end over the whole object,
with no content held in the filer entry. Anything else raises `NotReadable` before a byte is
sent, and the caller reads through the S3 API. A physical object that is gone raises NotFound,
as the S3 API would.

Small bodies are read whole (`read`): once the object's chunk list is known, one GET to a
volume server instead of SeaweedFS's S3 gateway, filer and volume server in turn.

The proxy that writes a physical object records its chunk list with the copy (`layout_of`,
schemas.Locator.layout), so that any proxy's first read of it needs no filer lookup either:
readers pass the copy's layout, and the filer is asked only without one.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from servicekit.errors import NotFound
from servicekit.socket_relay import RelayError, in_relay_thread, relay
from servicekit.upstream_http import ConnectionPool
from servicekit.upstream_response import UpstreamFailure, UpstreamTimeout, UpstreamUnreachable
from services.skystore.schemas import MAX_LAYOUT
from services.skystore.settings import SeaweedAccess

__all__ = [
    "ChunkSpan",
    "ChunkedBody",
    "NotReadable",
    "SeaweedReader",
    "chunk_spans",
    "entry_of_layout",
    "layout_of",
]

log = logging.getLogger(__name__)
IDLE_PER_SERVER = 8
VOLUME_CACHE_SECONDS = 60.0
ENTRIES = 4096  # filer entries kept
LOOKUP = 1024 * 1024  # the most a filer entry or a master answer may hold
POOL_LIMIT = 32
KEEPALIVE_SECONDS = 30.0
CONNECT_SECONDS = 5.0
# Chunk fields that change how its stored bytes map to the object's bytes.
_TRANSFORMING = ("is_compressed", "cipher_key", "is_chunk_manifest", "sse_type", "sse_metadata")


class NotReadable(Exception):
    """This object, or this region right now, cannot be read past the S3 API."""


@dataclass(frozen=True)
class ChunkSpan:
    """The bytes `first`..`last` of one chunk (a file id on a volume)."""

    file_id: str
    first: int
    last: int
    whole: bool  # the chunk's every byte

    @property
    def length(self) -> int:
        return self.last - self.first + 1

    @property
    def volume(self) -> str:
        return self.file_id.partition(",")[0]

    @property
    def range_header(self) -> str:
        return f"bytes={self.first}-{self.last}"


class _Connections:
    """Idle keep-alive connections per server ("host:port"); list.pop/append are thread-safe."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._idle: dict[str, list[http.client.HTTPConnection]] = {}

    def get(self, server: str, *, fresh: bool = False) -> tuple[http.client.HTTPConnection, bool]:
        """(a connection, whether it was idle: a failure on it may just mean it went stale)."""
        if not fresh:
            try:
                return self._idle.setdefault(server, []).pop(), True
            except IndexError:
                pass
        host, _, port = server.rpartition(":")
        return http.client.HTTPConnection(host, int(port), timeout=self._timeout), False

    def put(self, server: str, connection: http.client.HTTPConnection) -> None:
        idle = self._idle.setdefault(server, [])
        if len(idle) < IDLE_PER_SERVER:
            idle.append(connection)
        else:
            connection.close()

    def close(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().close()


class _Exchange:
    """One chunk's GET, sent on a connection, its response read when wanted; any failure is
    NotReadable (an OSError or HTTPException when the socket fails)."""

    def __init__(self, connections: _Connections, server: str, span: ChunkSpan) -> None:
        self.server, self.span = server, span
        self._connections = connections
        self._send(fresh=False)

    def _send(self, *, fresh: bool) -> None:
        self.connection, self._was_idle = self._connections.get(self.server, fresh=fresh)
        span = self.span
        headers = {} if span.whole else {"Range": span.range_header}
        try:
            self.connection.request("GET", f"/{span.file_id}", headers=headers)
        except (OSError, http.client.HTTPException):
            self.connection.close()
            if not self._was_idle:
                raise
            self._send(fresh=True)  # it went stale while idle

    def response(self) -> tuple[http.client.HTTPResponse, bytes]:
        """(the response, whose body is next on the socket after the bytes returned)."""
        try:
            response = self.connection.getresponse()
        except (http.client.RemoteDisconnected, ConnectionError):
            self.connection.close()
            if not self._was_idle:
                raise
            self._send(fresh=True)  # it went stale while idle
            response = self.connection.getresponse()
        span = self.span
        wanted = 200 if span.whole else 206
        if response.status != wanted:
            self.connection.close()
            raise NotReadable(f"volume server {self.server} answered {response.status}")
        if int(response.headers.get("content-length", -1)) != span.length:
            self.connection.close()
            raise NotReadable(f"volume server {self.server} sent a body of another length")
        buffered = response.fp.peek() if span.length else b""
        return response, response.fp.read(min(len(buffered), span.length))

    def done(self, response: http.client.HTTPResponse, *, consumed: bool) -> None:
        if consumed and not response.will_close:
            response.close()  # the response only: the socket stays with the connection
            self._connections.put(self.server, self.connection)
        else:
            response.close()
            self.connection.close()


class SeaweedReader:
    """Reads one region's objects from its volume servers (module doc). Lookups and small reads
    run on the event loop (servicekit's HTTP client); relayed bodies on relay threads."""

    def __init__(
        self, region: str, access: SeaweedAccess, *, timeout: float, entries: int = ENTRIES
    ) -> None:
        self.region = region
        self._access = access
        self._filer = urlsplit(access.filer).netloc
        self._master = urlsplit(access.master).netloc
        self._timeout = timeout
        self._pools: dict[str, ConnectionPool] = {}  # by "host:port", made in the running loop
        self._connections = _Connections(timeout)  # blocking ones, for relays
        # Filer entries by physical bucket and key: a physical key is written once, so its
        # chunk list holds until the object is deleted (then a chunk read fails: NotReadable).
        self._entries: dict[tuple[str, str], dict[str, Any]] = {}
        self._capacity = entries
        self._volumes: dict[str, tuple[float, str]] = {}  # volume id: (until, "host:port")

    async def aclose(self) -> None:
        self._connections.close()
        for pool in self._pools.values():
            await pool.close()

    async def relayed(
        self, bucket: str, key: str, first: int, last: int, size: int, layout: str | None = None
    ) -> ChunkedBody:
        """The bytes `first`..`last` of the `size`-byte physical object bucket/key, to relay,
        its first chunk's response head read; NotReadable or NotFound before any byte is.
        `layout`: the copy's recorded chunk list (layout_of), used unless one is kept."""
        located = await self._locate(bucket, key, first, last, size, layout)
        body = ChunkedBody(self._connections, last - first + 1, located)
        try:
            await in_relay_thread(body.start)
        except NotReadable:
            self._forget(bucket, key, located)
            raise
        return body

    async def read(
        self, bucket: str, key: str, first: int, last: int, size: int, layout: str | None = None
    ) -> bytes:
        """The bytes `first`..`last` read whole (a small body); NotReadable or NotFound."""
        located = await self._locate(bucket, key, first, last, size, layout)
        pieces = []
        try:
            for server, span in located:
                headers = [] if span.whole else [(b"range", span.range_header.encode())]
                status, data = await self._get(server, f"/{span.file_id}", headers, span.length)
                if status != (200 if span.whole else 206) or len(data) != span.length:
                    raise NotReadable(f"volume server {server} answered {status}, {len(data)} B")
                pieces.append(data)
        except NotReadable:
            self._forget(bucket, key, located)
            raise
        return b"".join(pieces)

    async def _locate(
        self, bucket: str, key: str, first: int, last: int, size: int, layout: str | None
    ) -> list[tuple[str, ChunkSpan]]:
        entry = self._entries.get((bucket, key))
        if entry is None and (entry := entry_of_layout(layout)) is not None:
            self._keep(bucket, key, entry)
        if entry is None:
            entry = await self.entry(bucket, key)
        try:
            spans = chunk_spans(entry, size, first, last)
        except NotReadable:
            self._entries.pop((bucket, key), None)
            raise
        return [(await self._volume_server(span.volume), span) for span in spans]

    def _forget(self, bucket: str, key: str, located: list[tuple[str, ChunkSpan]]) -> None:
        self._entries.pop((bucket, key), None)
        for _, span in located:
            self._volumes.pop(span.volume, None)

    async def entry(self, bucket: str, key: str, *, fresh: bool = False) -> dict[str, Any]:
        """The filer's entry of a physical object, kept; `fresh`: asked for even if kept."""
        entry = None if fresh else self._entries.get((bucket, key))
        if entry is not None:
            return entry
        path = f"{self._access.buckets_folder.rstrip('/')}/{bucket}/{key}"
        entry = await self._json(self._filer, f"{quote(path, safe='/~')}?metadata=true", path)
        self._keep(bucket, key, entry)
        return entry

    def _keep(self, bucket: str, key: str, entry: dict[str, Any]) -> None:
        if len(self._entries) >= self._capacity:
            del self._entries[next(iter(self._entries))]  # the oldest
        self._entries[(bucket, key)] = entry

    async def layout(self, bucket: str, key: str, size: int) -> str | None:
        """The layout to record for a physical object just written (layout_of its entry, which
        is kept); None when it cannot be read past the S3 API or the filer does not answer."""
        try:
            return layout_of(await self.entry(bucket, key), size)
        except (NotReadable, NotFound) as exc:
            log.info("no layout recorded for %s/%s: %s", bucket, key, exc)
            return None

    async def _volume_server(self, volume: str) -> str:
        known = self._volumes.get(volume)
        now = time.monotonic()
        if known is not None and known[0] > now:
            return known[1]
        answer = await self._json(
            self._master, f"/dir/lookup?volumeId={volume}", f"volume {volume}"
        )
        locations = answer.get("locations") or []
        if not locations:
            raise NotReadable(f"the master knows no server of volume {volume}")
        server = str(locations[0]["url"])
        self._volumes[volume] = (now + VOLUME_CACHE_SECONDS, server)
        return server

    async def _json(self, server: str, target: str, what: str) -> dict[str, Any]:
        status, data = await self._get(server, target, [(b"accept", b"application/json")])
        if status == 404:
            raise NotFound(f"{what} is not in region {self.region}", code="NoSuchKey")
        if status != 200:
            raise NotReadable(f"{server} answered {status} for {what}")
        try:
            return json.loads(data)
        except ValueError as exc:
            raise NotReadable(f"{server} answered no JSON for {what}") from exc

    async def _get(
        self, server: str, target: str, headers: list[tuple[bytes, bytes]], limit: int = LOOKUP
    ) -> tuple[int, bytes]:
        """(status, body) of a GET; a connection that went stale while idle is retried once."""
        pool = self._pool(server)
        for attempt in (1, 2):
            try:
                response = await pool.request("GET", target, headers)
                return response.status, await response.read(limit)
            except UpstreamTimeout as exc:
                raise NotReadable(f"{server}: {exc}") from exc
            except (UpstreamFailure, OSError) as exc:
                if attempt == 2 or isinstance(exc, UpstreamUnreachable):
                    raise NotReadable(f"{server}: {exc}") from exc
        raise AssertionError("unreachable")

    def _pool(self, server: str) -> ConnectionPool:
        pool = self._pools.get(server)
        if pool is None:
            pool = self._pools[server] = ConnectionPool.for_url(
                f"http://{server}",
                limit=POOL_LIMIT,
                keepalive=KEEPALIVE_SECONDS,
                connect_timeout=CONNECT_SECONDS,
                timeout=self._timeout,
            )
        return pool


class ChunkedBody:
    """A SocketBody (servicekit.socket_relay): the spans' bytes in order from their volume
    servers, each chunk's request sent while the one before is relayed."""

    def __init__(
        self, connections: _Connections, length: int, located: list[tuple[str, ChunkSpan]]
    ) -> None:
        self.length = length
        self._connections = connections
        self._located = located
        self._first: tuple[_Exchange, http.client.HTTPResponse, bytes] | None = None

    def start(self) -> None:
        """Ask for the first chunk and read its response head (blocking); NotReadable."""
        if self._located:
            self._first = _answer(self._exchange(*self._located[0]))

    def send_to(self, target: int, timeout: float) -> None:
        for exchange, response, prefix in self._answers():
            try:
                relay(
                    response.fileno(),
                    target,
                    exchange.span.length - len(prefix),
                    prefix=prefix,
                    timeout=timeout,
                )
            except BaseException:
                exchange.done(response, consumed=False)
                raise
            exchange.done(response, consumed=True)

    def _exchange(self, server: str, span: ChunkSpan) -> _Exchange:
        try:
            return _Exchange(self._connections, server, span)
        except (OSError, http.client.HTTPException) as exc:
            raise NotReadable(f"volume server {server}: {exc}") from exc

    def _answers(self) -> Iterator[tuple[_Exchange, http.client.HTTPResponse, bytes]]:
        """The chunks' answers in order; the next one's request goes out before one is handed
        on, its head is read once the one before has been relayed."""
        current, self._first = self._first, None
        if current is None:
            return
        pending: _Exchange | None = None
        try:
            for server, span in self._located[1:]:
                pending = self._exchange(server, span)
                handed, current = current, None
                yield handed
                answered, pending = pending, None
                current = _answer(answered)
            handed, current = current, None
            yield handed
        except NotReadable as exc:
            raise RelayError(str(exc)) from exc
        finally:
            self._drop(current)
            if pending is not None:
                pending.connection.close()

    @staticmethod
    def _drop(answer: tuple[_Exchange, http.client.HTTPResponse, bytes] | None) -> None:
        if answer is not None:
            answer[0].done(answer[1], consumed=False)

    def close(self, *, consumed: bool) -> None:
        self._drop(self._first)
        self._first = None


def _answer(exchange: _Exchange) -> tuple[_Exchange, http.client.HTTPResponse, bytes]:
    """The exchange's response head read; NotReadable when it failed."""
    try:
        return (exchange, *exchange.response())
    except (OSError, http.client.HTTPException, NotReadable) as exc:
        exchange.connection.close()
        raise NotReadable(f"chunk {exchange.span.file_id}: {exc}") from exc


def layout_of(entry: dict, size: int) -> str | None:
    """The entry's chunk list as a Locator.layout (JSON `{"size": n, "chunks": [[file id,
    offset, size], …]}`), when the object can be read from its chunks and the list is not too
    long to record; else None."""
    if size <= 0:
        return None
    try:
        chunk_spans(entry, size, 0, size - 1)
    except (NotReadable, KeyError, ValueError, TypeError):
        return None
    chunks = [
        [str(c["file_id"]), int(c.get("offset") or 0), int(c["size"])] for c in entry["chunks"]
    ]
    layout = json.dumps({"size": size, "chunks": chunks}, separators=(",", ":"))
    return layout if len(layout) <= MAX_LAYOUT else None


def entry_of_layout(layout: str | None) -> dict[str, Any] | None:
    """The filer entry a layout stands for (what chunk_spans reads); None for none or one that
    is not a layout (then the filer is asked)."""
    if not layout:
        return None
    try:
        fields = json.loads(layout)
        chunks = [
            {"file_id": str(file_id), "offset": int(offset), "size": int(length)}
            for file_id, offset, length in fields["chunks"]
        ]
        return {"FileSize": int(fields["size"]), "chunks": chunks}
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring a malformed copy layout: %s", exc)
        return None


def chunk_spans(entry: dict, size: int, first: int, last: int) -> list[ChunkSpan]:
    """The chunk spans holding bytes `first`..`last` of an entry that must hold `size` bytes."""
    if entry.get("Content") or entry.get("Remote"):
        raise NotReadable("the entry holds its content itself, or elsewhere")
    if int(entry.get("FileSize") or 0) != size:
        raise NotReadable(f"the entry has {entry.get('FileSize')} bytes, the record {size}")
    extended = entry.get("Extended") or {}
    if any("sse" in name.lower() or "encryption" in name.lower() for name in extended):
        raise NotReadable("the object is encrypted at rest")
    chunks = sorted(entry.get("chunks") or [], key=lambda c: int(c.get("offset") or 0))
    spans, end = [], 0
    for chunk in chunks:
        if any(chunk.get(field) for field in _TRANSFORMING):
            raise NotReadable("a chunk is not stored as plain bytes")
        offset, length = int(chunk.get("offset") or 0), int(chunk["size"])
        if offset != end:
            raise NotReadable("the chunks do not lie end to end")
        end = offset + length
        low, high = max(first, offset), min(last, end - 1)
        if low <= high:
            spans.append(
                ChunkSpan(
                    str(chunk["file_id"]), low - offset, high - offset, high - low + 1 == length
                )
            )
    if end != size:
        raise NotReadable(f"the chunks hold {end} bytes of {size}")
    return spans
