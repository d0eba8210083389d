"""Pure ASGI middleware of the service chassis, and the one question they all ask of a request.

Which route handled a request is only known after routing, so each middleware reads it from the
scope once the inner app has returned (routing writes into the same scope dict).
"""

from __future__ import annotations

from starlette.types import Message, Scope, Send

__all__ = ["UNMATCHED", "ResponseRecorder", "route_template"]

UNMATCHED = "<unmatched>"


def route_template(scope: Scope, root_path: str = "") -> str | None:
    """The template of the route that handled the request (`/items/{id}`), None if none did.

    `root_path` is the scope's root path as the caller saw it before routing; whatever mounts
    added to it since is the mount prefix of the route.
    """
    route = scope.get("route")
    if route is None:
        return None
    # FastAPI >= 0.16x keeps included routers unflattened: the scope's route carries only its
    # own path, the full template (with the routers' prefixes) lives in the routing context.
    fastapi_scope = scope.get("fastapi")
    context = None
    if isinstance(fastapi_scope, dict):
        context = fastapi_scope.get("effective_route_context")
    if context is not None and getattr(context, "original_route", None) is route:
        path = context.path_format
    else:
        path = getattr(route, "path_format", None) or getattr(route, "path", "")
    mount_prefix = scope.get("root_path", "").removeprefix(root_path)
    return mount_prefix + path


class ResponseRecorder:
    """An ASGI `send` that passes every message on, noting the status and the body bytes sent.

    The status stays 500 when the app raised before starting a response.
    """

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 500
        self.bytes_out = 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body":
            self.bytes_out += len(message.get("body", b""))
        await self._send(message)
