"""The streaming reverse proxy: bodies flow both ways without buffering, through a breaker."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Sequence

from fastapi import Request, Response
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse

from gateway.errors import GatewayTimeout
from gateway.identity import IDENTITY_HEADERS, IdentityTokens
from gateway.routes import Route
from gateway.signing import (
    DEVICE_SIGNATURE_HEADER,
    RESPONSE_SIGNATURE_HEADER,
    DeviceSignatures,
    ResponseSigner,
)
from gateway.upstreams import (
    Upstream,
    UpstreamFailure,
    UpstreamResponse,
    Upstreams,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from servicekit.errors import InvalidInput, PayloadTooLarge, ServiceUnavailable, UpstreamError
from servicekit.middleware.request_id import current_request_id
from servicekit.security import Identity
from servicekit.tracing import inject_trace_headers

__all__ = ["IDEMPOTENT_METHODS", "ReverseProxy"]

logger = logging.getLogger("gateway.proxy")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# RFC 9110 §7.6.1 hop-by-hop headers, plus what the gateway sets itself.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_SET_BY_GATEWAY = frozenset(
    {
        "host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "forwarded",
        "traceparent",
        "tracestate",
    }
)
_SET_BY_SERVER = frozenset({"server", "date"})
_UPSTREAM_DOWN_STATUSES = frozenset({502, 503, 504})
_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
_MAX_SIGNED_RESPONSE = 8 * 1024 * 1024
# Responses up to this size (by Content-Length, without content coding games) are read whole.
_SMALL_BODY = 64 * 1024


# Request header names (ASGI gives them in lower case) the gateway never passes upstream.
_NOT_FORWARDED = frozenset(
    name.encode() for name in _HOP_BY_HOP | _SET_BY_GATEWAY | IDENTITY_HEADERS
)
_UNENCODED = re.compile(r"[^\x21-\x7e]")


def _connection_listed(headers: Sequence[tuple[bytes, bytes]]) -> set[str]:
    """Header names a `Connection` header declares hop-by-hop for this message."""
    listed: set[str] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            listed |= {token.strip().lower() for token in value.decode("latin-1").split(",")}
    return listed


class _ClientHeaders:
    """What the proxy needs of a request's headers, from one pass over them: the ones to
    forward (hop-by-hop, identity and the gateway's own left out, the session cookie cut)."""

    __slots__ = ("chunked", "content_length", "forwarded", "host", "request_id")

    def __init__(self, raw: Sequence[tuple[bytes, bytes]], session_cookie: bytes) -> None:
        self.content_length: bytes | None = None
        self.chunked = False
        self.host = b""
        self.request_id = False
        forwarded = self.forwarded = []
        listed: set[bytes] = set()
        for name, value in raw:
            if name in _NOT_FORWARDED:
                if name == b"host":
                    self.host = value
                elif name == b"transfer-encoding":
                    self.chunked = True
                elif name == b"connection":
                    listed.update(token.strip().lower() for token in value.split(b","))
                continue
            if name == b"content-length":
                self.content_length = value
            elif name == b"cookie":
                value = _without_cookie(value, session_cookie)
                if not value:
                    continue
            elif name == b"x-request-id":
                self.request_id = True
            forwarded.append((name, value))
        if listed - _NOT_FORWARDED:  # a Connection header named end-to-end headers hop-by-hop
            self.forwarded = [(n, v) for n, v in forwarded if n not in listed]


def _without_cookie(header: bytes, prefix: bytes) -> bytes:
    return b"; ".join(
        c for c in (c.strip() for c in header.split(b";")) if c and not c.startswith(prefix)
    )


class _BodyTooLarge(Exception):
    pass


class ReverseProxy:
    def __init__(
        self,
        upstreams: Upstreams,
        tokens: IdentityTokens,
        *,
        retries: int,
        session_cookie: str,
        devices: DeviceSignatures,
        signer: ResponseSigner,
    ) -> None:
        self.upstreams = upstreams
        self.tokens = tokens
        self.retries = retries
        self.session_cookie = f"{session_cookie}=".encode()
        self.devices = devices
        self.signer = signer

    async def forward(self, request: Request, route: Route, identity: Identity) -> Response:
        upstream = self.upstreams.get(route.upstream)
        if upstream is None:
            raise ServiceUnavailable(
                f"{request.url.path}: the {route.upstream} service is not configured here",
                detail={"upstream": route.upstream},
            )
        client = _ClientHeaders(request.scope["headers"], self.session_cookie)
        declared = client.content_length
        if declared is not None and declared.isdigit() and int(declared) > route.max_body:
            raise PayloadTooLarge(
                f"request body of {declared.decode()} bytes exceeds the {route.max_body} bytes "
                f"accepted on {route.prefix}"
            )
        path = _upstream_path(request, route)
        headers = self._request_headers(request, identity, client)
        has_body = declared not in (None, b"0") or client.chunked
        if route.critical:
            return await self._forward_critical(request, route, upstream, path, headers, identity)
        body = _capped(request.stream(), route.max_body) if has_body else None
        query = request.scope.get("query_string", b"")
        retriable = _retriable(request, has_body)
        response = await self._send(upstream, request.method, path, query, headers, body, retriable)
        length = response.content_length()
        if length is not None and length <= _SMALL_BODY:
            # Read at once: one plain response, no streaming machinery, the upstream
            # connection back in its pool before the client is answered.
            content = await _read_capped(response, _SMALL_BODY)
            small = Response(content, status_code=response.status)
            small.raw_headers = _response_headers(response)
            return small
        return _streaming_response(response, upstream.name)

    async def _forward_critical(
        self,
        request: Request,
        route: Route,
        upstream: Upstream,
        path: str,
        headers: list[tuple[bytes, bytes]],
        identity: Identity,
    ) -> Response:
        """Critical payloads are small and signed whole: the request body is read and its
        device signature (by a key the caller registered) checked before anything goes
        upstream; the response is read, signed with the gateway's key, then sent."""
        body = b""
        if request.method in _METHODS_WITH_BODY:
            try:
                body = b"".join(
                    [chunk async for chunk in _capped(request.stream(), route.max_body)]
                )
            except _BodyTooLarge as exc:
                raise PayloadTooLarge(str(exc)) from None
            await self.devices.verify(
                request.headers.get(DEVICE_SIGNATURE_HEADER),
                request.method,
                request.url.path,
                body,
                caller=identity.principal,
            )
        # Signed as sent: no content coding between the signature and the bytes it covers.
        headers = [(n, v) for n, v in headers if n != b"accept-encoding"]
        headers.append((b"accept-encoding", b"identity"))
        query = request.scope.get("query_string", b"")
        retriable = request.method != "POST"
        response = await self._send(
            upstream, request.method, path, query, headers, body or None, retriable
        )
        content = await _read_capped(response, _MAX_SIGNED_RESPONSE)
        signed = Response(content, status_code=response.status)
        signed.raw_headers = [
            *_response_headers(response, extra_drop={"content-length"}),
            (b"content-length", str(len(content)).encode()),
            (RESPONSE_SIGNATURE_HEADER.encode(), self.signer.sign(content).encode()),
        ]
        return signed

    def _request_headers(
        self, request: Request, identity: Identity, client: _ClientHeaders
    ) -> list[tuple[bytes, bytes]]:
        scope = request.scope
        address = scope.get("client")
        headers = client.forwarded
        headers += [
            (b"x-forwarded-for", address[0].encode() if address else b"unknown"),
            (b"x-forwarded-proto", scope.get("scheme", "http").encode()),  # no URL object built
            (b"x-forwarded-host", client.host),
            (b"authorization", self.tokens.header_for(identity)),
        ]
        # The gateway's request span, or the caller's context when no exporter is configured.
        for name, value in inject_trace_headers({}).items():
            headers.append((name.encode(), value.encode("latin-1")))
        if not client.request_id and (request_id := current_request_id()):
            headers.append((b"x-request-id", request_id.encode()))
        return headers

    async def _send(
        self,
        upstream: Upstream,
        method: str,
        path: str,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        body: AsyncIterator[bytes] | bytes | None,
        retriable: bool,
    ) -> UpstreamResponse:
        attempt = 0
        while True:
            if not upstream.breaker.allow():
                retry_after = max(1, round(upstream.breaker.retry_after()))
                raise ServiceUnavailable(
                    f"the {upstream.name} service is failing; its circuit breaker is open",
                    detail={"upstream": upstream.name},
                    headers={"Retry-After": str(retry_after)},
                )
            try:
                response = await upstream.send(method, path, query, headers, body)
            except _BodyTooLarge as exc:
                upstream.breaker.success()
                raise PayloadTooLarge(str(exc)) from None
            except UpstreamUnreachable as exc:
                upstream.breaker.failure()
                if retriable and attempt < self.retries:
                    attempt += 1
                    await asyncio.sleep(0.05 * 2**attempt)
                    continue
                raise UpstreamError(
                    f"the {upstream.name} service cannot be reached: {exc}",
                    detail={"upstream": upstream.name},
                ) from None
            except UpstreamTimeout:
                upstream.breaker.failure()
                raise GatewayTimeout(
                    f"the {upstream.name} service did not answer in time",
                    detail={"upstream": upstream.name},
                ) from None
            except UpstreamFailure as exc:
                upstream.breaker.failure()
                raise UpstreamError(
                    f"the {upstream.name} service failed: {exc}",
                    detail={"upstream": upstream.name},
                ) from None
            if response.status in _UPSTREAM_DOWN_STATUSES:
                upstream.breaker.failure()
            else:
                upstream.breaker.success()
            return response


def _upstream_path(request: Request, route: Route) -> str:
    """The path as the client encoded it (so signatures over it, like SigV4's, still hold),
    without the route's prefix when it strips one."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    path = raw.decode("latin-1")
    if route.strip_prefix and not route.matches(path):
        raise InvalidInput(f"path {path!r} must spell the {route.prefix} prefix unencoded")
    if _UNENCODED.search(path):
        raise InvalidInput("path holds characters that must be percent-encoded")
    return route.upstream_path(path)


def _retriable(request: Request, has_body: bool) -> bool:
    # A streamed body cannot be sent twice; connect failures happen before it is read, but a
    # request with a body is retried only when the method makes a repeat harmless.
    return request.method in IDEMPOTENT_METHODS and (not has_body or request.method != "POST")


async def _capped(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in stream:
        seen += len(chunk)
        if seen > limit:
            raise _BodyTooLarge(f"request body exceeds the {limit} bytes accepted on this route")
        if chunk:
            yield chunk


async def _relay(response: UpstreamResponse, upstream: str) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.chunks():
            yield chunk
    except UpstreamFailure as exc:
        # Headers are out: all that is left is to cut the connection, so the client sees a
        # truncated body rather than a complete-looking one.
        logger.warning("%s response broke off: %s: %s", upstream, type(exc).__name__, exc)
        raise


def _response_headers(
    response: UpstreamResponse, extra_drop: frozenset[str] | set[str] = frozenset()
) -> list[tuple[bytes, bytes]]:
    raw = response.raw_headers
    drop = _HOP_BY_HOP | _SET_BY_SERVER | _connection_listed(raw) | extra_drop
    return [(n.lower(), v) for n, v in raw if n.decode("latin-1").lower() not in drop]


async def _read_capped(response: UpstreamResponse, limit: int) -> bytes:
    try:
        return await response.read(limit)
    except UpstreamFailure as exc:
        raise UpstreamError(f"upstream response: {exc}") from None


async def _closed(response: UpstreamResponse) -> None:
    response.close()  # on the event loop: a sync background task would run in a thread


def _streaming_response(response: UpstreamResponse, upstream: str) -> StreamingResponse:
    streaming = StreamingResponse(
        _relay(response, upstream),
        status_code=response.status,
        background=BackgroundTask(_closed, response),
    )
    streaming.raw_headers = _response_headers(response)
    return streaming
