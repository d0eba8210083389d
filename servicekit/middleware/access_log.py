"""One access log line per HTTP request: method, path, route, status, duration, bytes, client."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from servicekit.middleware import UNMATCHED, route_template

logger = logging.getLogger("servicekit.access")


class AccessLogMiddleware:
    """Logs every request at info, except `quiet_paths` (probes, scrapes) which go to debug.

    The request id and trace id are added by the JSON formatter, so this middleware must run
    inside the request id and tracing middleware.
    """

    def __init__(self, app: ASGIApp, quiet_paths: Collection[str] = ()) -> None:
        self.app = app
        self.quiet_paths = frozenset(quiet_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        root_path = scope.get("root_path", "")
        status = 500
        bytes_out = 0

        async def send_counting(message: Message) -> None:
            nonlocal status, bytes_out
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                bytes_out += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_counting)
        finally:
            path = scope["path"]
            client = scope.get("client")
            level = logging.DEBUG if path in self.quiet_paths else logging.INFO
            # The query string stays out: presigned URLs carry credentials in it.
            logger.log(
                level,
                "%s %s %s",
                scope["method"],
                path,
                status,
                extra={
                    "method": scope["method"],
                    "path": path,
                    "route": route_template(scope, root_path) or UNMATCHED,
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "bytes": bytes_out,
                    "client": f"{client[0]}:{client[1]}" if client else None,
                },
            )
