"""Large GETs read from a SeaweedFS region's volume servers, past its S3 gateway and filer.

SeaweedFS serves an S3 GET by relaying every chunk from a volume server through its filer and
its S3 gateway: on this project's machine, 75-110 ms of its CPU per 64 MiB, against 35-40 ms
when the same chunks are read from the volume server (bench/RESULTS.md). A proxy that may
reach the region's filer, master and volume servers (`EXTRACT_SKYSTORE_PROXY_SEAWEEDFS`) asks
the filer for the physical object's chunk list, the master where each volume lives, and relays
the chunks' bytes from the volume servers to the client one after the other.

Only what reads the same either way is read like this: chunks that are plain bytes (not
compressed, encrypted or a manifest of further chunks) laid end to end over the whole object,
with no content held in the filer entry. Anything else raises `NotReadable` before a byte is
sent, and the caller reads through the S3 API. A physical object that is gone raises NotFound,
as the S3 API would. Blocking sockets (http.client): every call here runs on a relay thread.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from servicekit.errors import NotFound
from servicekit.socket_relay import RelayError, relay
from services.skystore.settings import SeaweedAccess

__all__ = ["ChunkSpan", "ChunkedBody", "NotReadable", "SeaweedReader", "chunk_spans"]

IDLE_PER_SERVER = 8
VOLUME_CACHE_SECONDS = 60.0
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
        headers = {} if span.whole else {"Range": f"bytes={span.first}-{span.last}"}
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
    """Reads one region's objects from its volume servers (module doc)."""

    def __init__(self, region: str, access: SeaweedAccess, *, timeout: float) -> None:
        self.region = region
        self._access = access
        self._filer = urlsplit(access.filer).netloc
        self._master = urlsplit(access.master).netloc
        self._connections = _Connections(timeout)
        self._volumes: dict[str, tuple[float, str]] = {}  # volume id: (until, "host:port")
        self._lock = threading.Lock()

    def close(self) -> None:
        self._connections.close()

    def open(self, bucket: str, key: str, first: int, last: int, size: int) -> ChunkedBody:
        """The bytes `first`..`last` of the `size`-byte object bucket/key, the first chunk's
        request answered; NotReadable or NotFound before any byte is taken."""
        path = f"{self._access.buckets_folder.rstrip('/')}/{bucket}/{key}"
        entry = self._json(self._filer, f"{quote(path, safe='/~')}?metadata=true", path)
        spans = chunk_spans(entry, size, first, last)
        body = ChunkedBody(self, last - first + 1, spans)
        body.start()
        return body

    def exchange(self, span: ChunkSpan) -> _Exchange:
        """The span's GET, sent."""
        volume = span.file_id.partition(",")[0]
        server = self._volume_server(volume)
        try:
            return _Exchange(self._connections, server, span)
        except (OSError, http.client.HTTPException) as exc:
            self._forget_volume(volume)
            raise NotReadable(f"volume server {server}: {exc}") from exc

    def answer(self, exchange: _Exchange) -> tuple[_Exchange, http.client.HTTPResponse, bytes]:
        """The exchange's response head read; NotReadable when it failed."""
        try:
            return (exchange, *exchange.response())
        except (OSError, http.client.HTTPException, NotReadable) as exc:
            exchange.connection.close()
            self._forget_volume(exchange.span.file_id.partition(",")[0])
            raise NotReadable(f"chunk {exchange.span.file_id}: {exc}") from exc

    def _volume_server(self, volume: str) -> str:
        now = time.monotonic()
        with self._lock:
            known = self._volumes.get(volume)
        if known is not None and known[0] > now:
            return known[1]
        answer = self._json(self._master, f"/dir/lookup?volumeId={volume}", f"volume {volume}")
        locations = answer.get("locations") or []
        if not locations:
            raise NotReadable(f"the master knows no server of volume {volume}")
        server = str(locations[0]["url"])
        with self._lock:
            self._volumes[volume] = (now + VOLUME_CACHE_SECONDS, server)
        return server

    def _forget_volume(self, volume: str) -> None:
        with self._lock:
            self._volumes.pop(volume, None)

    def _json(self, server: str, target: str, what: str) -> dict:
        for attempt in (1, 2):
            connection, was_idle = self._connections.get(server)
            try:
                connection.request("GET", target, headers={"Accept": "application/json"})
                response = connection.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                if was_idle and attempt == 1:
                    continue  # it went stale while idle
                raise NotReadable(f"{server}: {exc}") from exc
            if response.will_close:
                connection.close()
            else:
                self._connections.put(server, connection)
            if response.status == 404:
                raise NotFound(f"{what} is not in region {self.region}", code="NoSuchKey")
            if response.status != 200:
                raise NotReadable(f"{server} answered {response.status} for {what}")
            try:
                return json.loads(data)
            except ValueError as exc:
                raise NotReadable(f"{server} answered no JSON for {what}") from exc
        raise AssertionError("unreachable")


class ChunkedBody:
    """A SocketBody (servicekit.socket_relay): the spans' bytes in order, each chunk's request
    sent while the one before is relayed."""

    def __init__(self, reader: SeaweedReader, length: int, spans: list[ChunkSpan]) -> None:
        self.length = length
        self._reader = reader
        self._spans = spans
        self._first: tuple[_Exchange, http.client.HTTPResponse, bytes] | None = None

    def start(self) -> None:
        if self._spans:
            self._first = self._reader.answer(self._reader.exchange(self._spans[0]))

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

    def _answers(self) -> Iterator[tuple[_Exchange, http.client.HTTPResponse, bytes]]:
        """The chunks' answers in order; the next one's request goes out before one is handed
        on, its head is read once the one before has been relayed."""
        current, self._first = self._first, None
        if current is None:
            return
        pending: _Exchange | None = None
        try:
            for span in self._spans[1:]:
                pending = self._reader.exchange(span)
                handed, current = current, None
                yield handed
                answered, pending = pending, None
                current = self._reader.answer(answered)
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
