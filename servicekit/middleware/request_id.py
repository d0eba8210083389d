"""Request ids: taken from a sane incoming X-Request-ID or made up, echoed, and kept for logs."""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-request-id"

# Anything else (long, spaces, quotes, newlines) could forge log lines or bloat them.
_SANE = re.compile(r"[A-Za-z0-9._-]{1,128}")

_request_id: ContextVar[str | None] = ContextVar("extract_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being handled in this context, None outside a request."""
    return _request_id.get()


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's X-Request-ID if it is a sane token, else a fresh uuid4 hex."""
    for name, value in headers:
        if name.lower() == HEADER.encode():
            candidate = value.decode("latin-1")
            if _SANE.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Gives every HTTP request an id: in `scope["state"]`, in a contextvar, in the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope["headers"])
        # A copy: the lifespan state dict may be shared by every request (asgi-lifespan does).
        scope["state"] = {**scope.get("state", {}), "request_id": request_id}
        header = (HEADER.encode(), request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != header[0]]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        token = _request_id.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _request_id.reset(token)
