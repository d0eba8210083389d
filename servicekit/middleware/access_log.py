"""One access log line per HTTP request: method, path, route, status, duration, bytes, client."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection

from starlette.types import ASGIApp, Receive, Scope, Send

from servicekit.middleware import UNMATCHED, ResponseRecorder, route_template

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
        response = ResponseRecorder(send)
        try:
            await self.app(scope, receive, response)
        finally:
            path = scope["path"]
            level = logging.DEBUG if path in self.quiet_paths else logging.INFO
            if logger.isEnabledFor(level):  # a line nobody reads is not built
                self._log(level, scope, root_path, response, time.perf_counter() - started)

    @staticmethod
    def _log(
        level: int, scope: Scope, root_path: str, response: ResponseRecorder, seconds: float
    ) -> None:
        path = scope["path"]
        client = scope.get("client")
        # The query string stays out: presigned URLs carry credentials in it.
        logger.log(
            level,
            "%s %s %s",
            scope["method"],
            path,
            response.status,
            extra={
                "method": scope["method"],
                "path": path,
                "route": route_template(scope, root_path) or UNMATCHED,
                "status": response.status,
                "duration_ms": round(seconds * 1000, 3),
                "bytes": response.bytes_out,
                "client": f"{client[0]}:{client[1]}" if client else None,
            },
        )
