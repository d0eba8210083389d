"""The S3 listener: a second TLS port whose requests reach the SkyStore proxy byte for byte.

SigV4 signs the method, path, query, Host and chosen headers, so nothing of those may change on
the way: no prefix is stripped, Host stays as the client sent it, no identity token is minted
(the SkyStore proxy verifies the signature and knows the key's principal). Only hop-by-hop
headers (never signed) are dropped. Limits, access log and metrics still apply.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Sequence
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.server import ServerState

from gateway.errors import GatewayTimeout
from gateway.limits import LimitsMiddleware, RateLimiter
from gateway.upstreams import Upstream, UpstreamFailure, UpstreamResponse, UpstreamTimeout
from servicekit.errors import ExtractError, PayloadTooLarge, ServiceUnavailable, UpstreamError
from servicekit.metrics import ServiceMetrics
from servicekit.middleware.access_log import AccessLogMiddleware
from servicekit.middleware.coalesce import CoalescingMiddleware
from servicekit.middleware.metrics import MetricsMiddleware
from servicekit.middleware.request_id import RequestIdMiddleware
from servicekit.wire_errors import WireError, WireFormat, render_error

__all__ = ["S3_MAX_OBJECT", "S3Listener", "S3Passthrough", "s3_app"]

logger = logging.getLogger("gateway.s3")

# S3's largest single PUT (and largest part); aws-chunked framing adds ~90 bytes per chunk of
# at least 8 KiB, so the bytes on the wire may exceed it by a little over 1 %.
S3_MAX_OBJECT = 5 * 1024**3
_FRAMING_ALLOWANCE = S3_MAX_OBJECT // 64
# Hop-by-hop (RFC 9110 §7.6.1) plus Expect, which uvicorn answers itself; SigV4 never signs them.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"expect",
    }
)
_UPSTREAM_DOWN_STATUSES = frozenset({502, 503, 504})


class _S3Route:
    """What the access log and metrics name the S3 listener's requests after."""

    path_format = "s3:/{bucket}/{key}"


_ROUTE = _S3Route()


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    """The client disconnected while its body was being forwarded: nobody to answer."""


def _declared_size(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The payload size the client announces: the decoded size of an aws-chunked body, else
    Content-Length."""
    found: dict[bytes, bytes] = {}
    for name, value in headers:
        lower = name.lower()
        if lower in (b"content-length", b"x-amz-decoded-content-length"):
            found[lower] = value
    value = found.get(b"x-amz-decoded-content-length", found.get(b"content-length"))
    return int(value) if value is not None and value.isdigit() else None


def _connection_listed(headers: Sequence[tuple[bytes, bytes]]) -> set[bytes]:
    listed: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            listed |= {token.strip().lower() for token in value.split(b",")}
    return listed


def _forwarded_headers(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    drop = _HOP_BY_HOP | _connection_listed(headers)
    return [(name, value) for name, value in headers if name.lower() not in drop]


class S3Passthrough:
    """The ASGI app of the S3 listener: every request to `upstream` unchanged, streamed."""

    def __init__(self, upstream: Upstream | None, *, max_body: int = S3_MAX_OBJECT) -> None:
        self.upstream = upstream
        self.max_body = max_body
        self.max_wire_body = max_body + max_body // 64

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        scope["route"] = _ROUTE
        path = scope.get("path", "/")
        try:
            response = await self._send_upstream(scope, receive)
        except _ClientGone:
            logger.info("%s %s: the client went away while sending the body", scope["method"], path)
            return
        except ExtractError as exc:
            error = WireError.of(exc)
            await render_error(WireFormat.S3, error, resource=path)(scope, receive, send)
            return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": _forwarded_headers(response.raw_headers),
                }
            )
            async for chunk in response.chunks():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except UpstreamFailure as exc:
            # Headers are out: cutting the connection is all that is left, so the client sees
            # a short body rather than a complete-looking one.
            logger.warning("skystore response broke off: %s: %s", type(exc).__name__, exc)
            raise
        finally:
            # Back to the pool only when read to its end (a client gone leaves it half read).
            response.close()

    async def _send_upstream(self, scope: Scope, receive: Receive) -> UpstreamResponse:
        upstream = self.upstream
        if upstream is None:
            raise ServiceUnavailable("no SkyStore proxy is configured behind this S3 port")
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        declared = _declared_size(headers)
        if declared is not None and declared > self.max_body:
            raise PayloadTooLarge(
                f"request body of {declared} bytes exceeds S3's {self.max_body} bytes per PUT",
                code="EntityTooLarge",
            )
        has_body = any(
            name.lower() in (b"content-length", b"transfer-encoding") and value != b"0"
            for name, value in headers
        )
        raw_path = scope.get("raw_path") or scope["path"].encode()
        forwarded = _forwarded_headers(headers)
        if not upstream.breaker.allow():
            raise ServiceUnavailable(
                "the SkyStore proxy is failing; its circuit breaker is open",
                headers={"Retry-After": str(max(1, round(upstream.breaker.retry_after())))},
            )
        try:
            response = await upstream.send(
                scope["method"],
                raw_path.decode("latin-1"),
                scope["query_string"],
                forwarded,
                self._body(receive) if has_body else None,
            )
        except _BodyTooLarge as exc:
            raise PayloadTooLarge(str(exc), code="EntityTooLarge") from None
        except UpstreamTimeout:
            upstream.breaker.failure()
            raise GatewayTimeout("the SkyStore proxy did not answer in time") from None
        except UpstreamFailure as exc:
            upstream.breaker.failure()
            raise UpstreamError(f"the SkyStore proxy cannot be reached: {exc}") from None
        if response.status in _UPSTREAM_DOWN_STATUSES:
            upstream.breaker.failure()
        else:
            upstream.breaker.success()
        return response

    async def _body(self, receive: Receive) -> AsyncIterator[bytes]:
        seen = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_wire_body:
                raise _BodyTooLarge(
                    f"request body exceeds S3's {self.max_body} bytes per PUT (plus framing)"
                )
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return


def s3_app(
    upstream: Upstream | None,
    *,
    metrics: ServiceMetrics,
    per_ip: RateLimiter,
    max_header_bytes: int,
) -> Any:
    """The S3 listener's app with the chassis's request id, access log and metrics, and the
    gateway's per-address rate limit and header cap (errors as S3 XML)."""
    app: Any = S3Passthrough(upstream)
    app = LimitsMiddleware(
        app, per_ip=per_ip, max_header_bytes=max_header_bytes, wire_format=WireFormat.S3
    )
    app = MetricsMiddleware(app, metrics=metrics)
    app = AccessLogMiddleware(app)
    return CoalescingMiddleware(RequestIdMiddleware(app))


class S3Listener:
    """uvicorn's HTTP protocol on its own TLS socket, inside the gateway's event loop.

    No uvicorn.Server: that one owns signals and the lifespan, which stay the main listener's.
    No Date/Server headers are added: the SkyStore proxy's go through (botocore corrects its
    clock skew from Date).
    """

    def __init__(self, app: Any, *, host: str, port: int, ssl_context: ssl.SSLContext) -> None:
        self.config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            ws="none",
            server_header=False,
            date_header=False,
        )
        self.ssl_context = ssl_context
        self.state = ServerState()
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        config = self.config
        config.load()
        sock = socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((config.host, config.port))
        except OSError as exc:
            sock.close()
            raise RuntimeError(
                f"the S3 port {config.port} cannot be bound ({exc.strerror}); "
                "move it with EXTRACT_GATEWAY_S3_PORT"
            ) from None
        sock.set_inheritable(True)
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.state, app_state={}
            )

        self._server = await loop.create_server(
            protocol, sock=sock, ssl=self.ssl_context, backlog=config.backlog
        )
        logger.info("S3 listener on https://%s:%d", config.host, config.port)

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening, let requests in flight finish (5 s at most), then drop every
        connection: idle keep-alive clients may never answer a TLS close_notify."""
        if self._server is None:
            return
        self._server.close()
        for connection in list(self.state.connections):
            connection.shutdown()
        if self.state.tasks:
            _, pending = await asyncio.wait(list(self.state.tasks), timeout=5)
            for task in pending:
                task.cancel()
        for _ in range(20):
            if not self.state.connections:
                break
            await asyncio.sleep(0.05)
        for connection in list(self.state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        await self._server.wait_closed()
        self._server = None
