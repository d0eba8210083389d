"""The object data path to a region's S3 store over a pooled keep-alive HTTP client: GET and PUT
signed here (UNSIGNED-PAYLOAD), bodies streamed as they arrive. botocore's per-request
machinery costs milliseconds, which small objects cannot afford; the rest of the S3 API still
goes through the region's aiobotocore client."""

from __future__ import annotations

import http.client
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

import httpx
from botocore.exceptions import ClientError

from servicekit.errors import BadRequest, ExtractError, ServiceUnavailable
from servicekit.infra.seaweed import S3Endpoint
from servicekit.s3 import translate_s3_error
from servicekit.sigv4 import UNSIGNED_PAYLOAD, sign_request
from servicekit.socket_relay import RelayError, in_relay_thread, put_from_socket, relay
from servicekit.upstream_http import ConnectionPool
from servicekit.upstream_response import UpstreamFailure

__all__ = ["S3Http"]

IDLE_RELAY_CONNECTIONS = 8
SIGNING_REGION = "us-east-1"
# The GET pool: connections open at once, idle ones kept this long, a connect bounded by this.
GET_CONNECTIONS = 100
GET_KEEPALIVE = 30.0
CONNECT_TIMEOUT = 5.0
# An S3 error document is a few hundred bytes; more than this is not one.
ERROR_BODY_LIMIT = 1024 * 1024


class SocketGet:
    """A GET whose head has been read, its socket left at the body for a relay (SocketBody)."""

    def __init__(
        self,
        connection: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        prefix: bytes,
        idle: list[http.client.HTTPConnection],
    ) -> None:
        self._connection = connection
        self._response = response
        self._idle = idle
        self.prefix = prefix
        self.length = int(response.headers["content-length"])

    def fileno(self) -> int:
        assert self._connection.sock is not None
        return self._connection.sock.fileno()

    def send_to(self, target: int, timeout: float) -> None:
        relay(
            self.fileno(),
            target,
            self.length - len(self.prefix),
            prefix=self.prefix,
            timeout=timeout,
        )

    def close(self, *, consumed: bool) -> None:
        # A body read to its last byte leaves the connection at the next response: kept, it
        # spares the next large GET a connect and TCP's slow start.
        if consumed and not self._response.will_close and len(self._idle) < IDLE_RELAY_CONNECTIONS:
            self._response.close()  # the response only; the socket stays with the connection
            self._idle.append(self._connection)
        else:
            self._connection.close()


class S3Http:
    def __init__(self, endpoint: S3Endpoint, *, timeout: float = 60.0) -> None:
        self._endpoint = endpoint
        parts = urlsplit(endpoint.url)
        self._host = parts.netloc
        # Plain HTTP only: a relay moves bytes between sockets, and TLS is not bytes on a socket.
        self.relays = parts.scheme == "http"
        self._timeout_seconds = timeout
        self._idle: list[http.client.HTTPConnection] = []  # list.pop/append are thread-safe
        self._http = httpx.AsyncClient(
            base_url=endpoint.url,
            timeout=httpx.Timeout(timeout, connect=5.0),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=50),
        )
        # GETs go through servicekit's pool (httptools): less CPU per request than aiohttp or
        # httpx, which a small GET feels. PUTs stay on httpx, whose errors tell a body of the
        # wrong length apart.
        self._get_pool: ConnectionPool | None = None

    def _gets(self) -> ConnectionPool:
        # Made on first use: its connections belong to the running event loop.
        if self._get_pool is None:
            self._get_pool = ConnectionPool.for_url(
                self._endpoint.url,
                limit=GET_CONNECTIONS,
                keepalive=GET_KEEPALIVE,
                connect_timeout=CONNECT_TIMEOUT,
                timeout=self._timeout_seconds,
            )
        return self._get_pool

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().close()
        await self._http.aclose()
        if self._get_pool is not None:
            await self._get_pool.close()

    def _signed(self, method: str, path: str, headers: dict[str, str]) -> dict[str, str]:
        headers = {"host": self._host, **headers}
        return headers | sign_request(
            method=method,
            path=path,
            headers=headers,
            payload_hash=UNSIGNED_PAYLOAD,
            access_key=self._endpoint.access_key,
            secret=self._endpoint.secret_key,
            region=SIGNING_REGION,
            now=datetime.now(UTC),
        )

    def _request(
        self,
        method: str,
        bucket: str,
        key: str,
        headers: dict[str, str],
        content: bytes | AsyncIterator[bytes] | None = None,
    ) -> httpx.Request:
        path = _path(bucket, key)
        headers = self._signed(method, path, headers)
        return self._http.build_request(method, path, headers=headers, content=content)

    def _unreachable(self, exc: Exception, bucket: str, key: str) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"S3 at {self._endpoint.url} is unreachable: {exc}",
            detail={"bucket": bucket, "key": key, "endpoint": self._endpoint.url},
        )

    async def _send(self, request: httpx.Request, bucket: str, key: str) -> httpx.Response:
        try:
            response = await self._http.send(request, stream=True)
        except httpx.LocalProtocolError as exc:
            # The body streamed through was longer or shorter than its Content-Length.
            raise BadRequest(
                f"the body does not match its declared length: {exc}", code="IncompleteBody"
            ) from exc
        except httpx.HTTPError as exc:
            raise self._unreachable(exc, bucket, key) from exc
        if response.status_code >= 300:
            try:
                body = await response.aread()
            finally:
                await response.aclose()
            raise _error(response.status_code, body, bucket=bucket, key=key)
        return response

    async def get(
        self, bucket: str, key: str, *, range_header: str | None = None
    ) -> tuple[Mapping[str, str], AsyncIterator[bytes]]:
        """(the response headers, the body as chunks); the body must be consumed or closed."""
        path = _path(bucket, key)
        headers = {"accept-encoding": "identity"}
        if range_header:
            headers["range"] = range_header
        signed = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in self._signed("GET", path, headers).items()
        ]
        try:
            response = await self._gets().request("GET", path, signed)  # sent as escaped
            if response.status >= 300:
                body = await response.read(ERROR_BODY_LIMIT)
                raise _error(response.status, body, bucket=bucket, key=key)
        except (UpstreamFailure, OSError) as exc:
            raise self._unreachable(exc, bucket, key) from exc
        # The body's pieces as they arrive; the response is closed when they end, or when the
        # iterator is closed or dropped before.
        return _Headers(response.raw_headers), response.chunks()

    async def get_socket(
        self, bucket: str, key: str, *, range_header: str | None = None
    ) -> SocketGet:
        """The response, its body left on the socket; close it when done. Blocking sockets
        (http.client), so it runs in a thread."""
        path = _path(bucket, key)
        headers = {"accept-encoding": "identity"}
        if range_header:
            headers["range"] = range_header
        signed = self._signed("GET", path, headers)
        try:
            return await in_relay_thread(self._get_socket, path, signed, bucket, key)
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc, bucket, key) from exc

    def _get_socket(self, path: str, headers: dict[str, str], bucket: str, key: str) -> SocketGet:
        while self._idle:
            try:
                connection = self._idle.pop()
            except IndexError:  # another thread took the last one
                break
            try:
                return self._ask(connection, path, headers, bucket, key)
            except ConnectionError:
                continue  # the store closed it while it was idle
        parts = urlsplit(self._endpoint.url)
        connection = http.client.HTTPConnection(
            parts.hostname or "", parts.port, timeout=self._timeout_seconds
        )
        return self._ask(connection, path, headers, bucket, key)

    def _ask(
        self,
        connection: http.client.HTTPConnection,
        path: str,
        headers: dict[str, str],
        bucket: str,
        key: str,
    ) -> SocketGet:
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            if response.status >= 300:
                raise _error(response.status, response.read(), bucket=bucket, key=key)
            length = int(response.headers["content-length"])
            # Body bytes that arrived with the head sit in the reader's buffer; the rest is
            # still on the socket. peek() returns what is buffered without reading past it.
            buffered = response.fp.peek() if length else b""
            prefix = response.fp.read(min(len(buffered), length))
            return SocketGet(connection, response, prefix, self._idle)
        except BaseException:
            connection.close()
            raise

    async def put_from_socket(
        self,
        bucket: str,
        key: str,
        body: tuple[bytes, int | None, int],
        digest: Callable[[memoryview], None],
        *,
        stall_timeout: float,
    ) -> str:
        """Store a body under bucket/key in one request: `body` is (the bytes read, the client's
        socket or None, the length); each piece is passed to `digest` before it goes on. A
        fresh connection each time: a stale one would fail after the body was taken."""
        length = body[2]
        path = _path(bucket, key)
        signed = self._signed("PUT", path, {"content-length": str(length)})
        parts = urlsplit(self._endpoint.url)
        connection = http.client.HTTPConnection(
            parts.hostname or "", parts.port, timeout=self._timeout_seconds
        )
        try:
            status, headers, answer = await put_from_socket(
                connection, path, signed, body, digest, stall_timeout=stall_timeout
            )
        except RelayError as exc:
            raise incomplete_body(exc) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc, bucket, key) from exc
        if status >= 300:
            raise _error(status, answer, bucket=bucket, key=key)
        return headers.get("etag", "").strip('"')

    async def put(
        self, bucket: str, key: str, content: bytes | AsyncIterator[bytes], *, length: int
    ) -> str:
        """Store `length` bytes under bucket/key in one request; the ETag without quotes."""
        headers = {"content-length": str(length)}
        request = self._request("PUT", bucket, key, headers, content)
        response = await self._send(request, bucket, key)
        await response.aclose()
        return response.headers.get("etag", "").strip('"')


def incomplete_body(error: RelayError) -> BadRequest:
    return BadRequest(f"the body did not arrive: {error}", code="IncompleteBody")


def _path(bucket: str, key: str) -> str:
    return "/" + quote(f"{bucket}/{key}", safe="/~")


class _Headers(Mapping[str, str]):
    """A response's headers, looked up by name in any case; decoded only when asked."""

    __slots__ = ("_raw",)

    def __init__(self, raw: Sequence[tuple[bytes, bytes]]) -> None:
        self._raw = raw

    def __getitem__(self, name: str) -> str:
        wanted = name.lower().encode("latin-1")
        for raw_name, value in self._raw:
            if raw_name.lower() == wanted:
                return value.decode("latin-1")
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for raw_name, _ in self._raw:
            name = raw_name.decode("latin-1").lower()
            if name not in seen:
                seen.add(name)
                yield name

    def __len__(self) -> int:
        return len({raw_name.lower() for raw_name, _ in self._raw})


def _error(status: int, body: bytes, *, bucket: str, key: str) -> ExtractError:
    code = message = ""
    try:
        root = ET.fromstring(body) if body else None
    except ET.ParseError:
        root = None
    if root is not None:
        code = root.findtext("Code") or ""
        message = root.findtext("Message") or ""
    error = {"Error": {"Code": code, "Message": message}}
    response = {**error, "ResponseMetadata": {"HTTPStatusCode": status}}
    return translate_s3_error(ClientError(response, "S3"), bucket=bucket, key=key)  # type: ignore[arg-type]
