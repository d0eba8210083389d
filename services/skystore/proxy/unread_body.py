"""Pure ASGI middleware: a response sent before the request body was read closes the connection.

S3 clients send `Expect: 100-continue` with uploads. When the proxy refuses one early (no such
upload, access denied) the client never sends the body; kept alive, the connection would then
read the client's next request as the rest of this body.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CloseOnUnreadBody"]


class CloseOnUnreadBody:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        expects_body = headers.get(b"content-length", b"0") != b"0" or (
            b"transfer-encoding" in headers
        )
        body_done = not expects_body

        async def receive_noting_end() -> Message:
            nonlocal body_done
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_done = True
            return message

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and not body_done:
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"connection", b"close")],
                }
            await send(message)

        await self.app(scope, receive_noting_end, send_closing)
