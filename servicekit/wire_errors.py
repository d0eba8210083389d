"""Errors on the wire: the one place that turns exceptions into each service's error format.

    PROBLEM  RFC 9457 application/problem+json   (most services)
    NUVLA    {"status", "message", "resource-id"} (catalog)
    S3       <Error><Code>…</Code>…</Error>        (S3 proxy)
    OIP      {"error": "…"}                       (serving, Open Inference Protocol)

Every error body carries the request id. Exceptions nobody mapped become a generic 500 whose
traceback goes to the log only.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from http import HTTPStatus
from typing import Any
from xml.sax.saxutils import escape

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from opentelemetry import trace
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from servicekit.errors import ExtractError, InvalidInput
from servicekit.middleware.request_id import current_request_id

__all__ = [
    "InternalErrorMiddleware",
    "WireError",
    "WireFormat",
    "from_http_exception",
    "from_validation_error",
    "install_error_handlers",
    "render_error",
]

logger = logging.getLogger("servicekit.errors")


class WireFormat(StrEnum):
    PROBLEM = "problem"
    NUVLA = "nuvla"
    S3 = "s3"
    OIP = "oip"


@dataclass(frozen=True)
class WireError:
    """What an error response says, whatever raised it."""

    status: int
    code: str
    message: str
    detail: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, exc: ExtractError) -> WireError:
        return cls(exc.status, exc.code, exc.message, exc.detail, exc.headers)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:  # a status outside the registry, e.g. nginx's 499
        return f"HTTP {status}"


def _json(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, default=str, ensure_ascii=False).encode()


def _problem(error: WireError, request_id: str | None, resource: str) -> tuple[bytes, str]:
    # Extension members first, so that `detail` can never overwrite the standard members.
    body: dict[str, Any] = {
        **error.detail,
        "type": "about:blank",
        "title": _phrase(error.status),
        "status": error.status,
        "detail": error.message,
        "code": error.code,
    }
    if request_id:
        body["instance"] = f"urn:extract:request:{request_id}"
    return _json(body), "application/problem+json"


def _nuvla(error: WireError, request_id: str | None, resource: str) -> tuple[bytes, str]:
    body: dict[str, Any] = {"status": error.status, "message": error.message}
    if "resource-id" in error.detail:
        body["resource-id"] = error.detail["resource-id"]
    if request_id:
        body["request-id"] = request_id
    return _json(body), "application/json"


# Characters XML 1.0 cannot carry even escaped (a path may hold a decoded %00).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_XML_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9._-]*")


def _xml_text(value: object) -> str:
    return escape(_NOT_XML.sub("\ufffd", str(value)))


def _s3(error: WireError, request_id: str | None, resource: str) -> tuple[bytes, str]:
    elements = [("Code", error.code), ("Message", error.message)]
    # S3 errors name what they were about (<BucketName>, <Key>, <Condition> …): scalars of
    # `detail` whose keys are element names become elements.
    elements += [
        (key, value)
        for key, value in error.detail.items()
        if _XML_NAME.fullmatch(key) and isinstance(value, str | int | float)
    ]
    elements += [("Resource", resource), ("RequestId", request_id or "")]
    inner = "".join(f"<{name}>{_xml_text(value)}</{name}>" for name, value in elements)
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{inner}</Error>'
    return body.encode(), "application/xml"


def _oip(error: WireError, request_id: str | None, resource: str) -> tuple[bytes, str]:
    body: dict[str, Any] = {"error": error.message}
    if request_id:
        body["request_id"] = request_id
    return _json(body), "application/json"


_RENDERERS: dict[WireFormat, Callable[[WireError, str | None, str], tuple[bytes, str]]] = {
    WireFormat.PROBLEM: _problem,
    WireFormat.NUVLA: _nuvla,
    WireFormat.S3: _s3,
    WireFormat.OIP: _oip,
}


def render_error(wire_format: WireFormat, error: WireError, *, resource: str) -> Response:
    """The response for `error` in `wire_format`; `resource` is the request path."""
    content, media_type = _RENDERERS[wire_format](error, current_request_id(), resource)
    return Response(content, error.status, dict(error.headers), media_type=media_type)


# The platform's code for a status, from the error hierarchy (400 → InvalidRequest …).
_CODES = {cls.status: cls.default_code for cls in ExtractError.__subclasses__()}


def _code_for(status: int) -> str:
    return _CODES.get(status) or _phrase(status).title().replace(" ", "")


def from_http_exception(request: Request, exc: HTTPException) -> WireError:
    """What a Starlette/FastAPI HTTPException says on the wire (404s name what was missing)."""
    status = exc.status_code
    message = str(exc.detail)
    if message == _phrase(status):
        # Starlette's own 404/405 say only "Not Found": say what was not found.
        message = f"{message}: {request.method} {request.url.path}"
    return WireError(status, _code_for(status), message, headers=exc.headers or {})


def from_validation_error(exc: RequestValidationError) -> WireError:
    """A request that failed FastAPI's validation as a 400 listing every problem."""
    problems = [
        {"location": ".".join(str(part) for part in error["loc"]), "message": error["msg"]}
        for error in exc.errors()
    ]
    listed = "; ".join(f"{p['location']}: {p['message']}" for p in problems)
    # Bad input is a 400 on this platform, not FastAPI's 422.
    return WireError.of(InvalidInput(f"invalid request: {listed}", detail={"errors": problems}))


def install_error_handlers(app: FastAPI, wire_format: WireFormat) -> None:
    """Map ExtractError, validation errors, HTTP errors and anything else to `wire_format`.

    Installs a middleware for the last case: call this before adding middleware that should
    see those 500s (request id, access log, metrics, tracing).
    """
    app.state.wire_format = wire_format

    async def on_extract_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ExtractError)
        if exc.status >= 500:
            logger.warning("%s %s: %s %s", request.method, request.url.path, exc.code, exc.message)
        return render_error(wire_format, WireError.of(exc), resource=request.url.path)

    async def on_http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        error = from_http_exception(request, exc)
        return render_error(wire_format, error, resource=request.url.path)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return render_error(wire_format, from_validation_error(exc), resource=request.url.path)

    app.add_exception_handler(ExtractError, on_extract_error)
    app.add_exception_handler(HTTPException, on_http_exception)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_middleware(InternalErrorMiddleware, wire_format=wire_format)


class InternalErrorMiddleware:
    """Answers an exception no handler mapped with a generic 500; the traceback goes to the log.

    Starlette answers those in its outermost middleware, outside every middleware of ours, and
    re-raises them: the request id, access log and metrics would never see that 500.
    """

    def __init__(self, app: ASGIApp, wire_format: WireFormat) -> None:
        self.app = app
        self.wire_format = wire_format

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def send_noting_start(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_noting_start)
        except Exception as exc:
            logger.exception("unhandled error in %s %s", scope["method"], scope["path"])
            trace.get_current_span().record_exception(exc)
            if response_started:
                raise  # too late to answer; the server drops the connection
            message = "internal error"
            if request_id := current_request_id():
                message += f"; quote request id {request_id} when reporting it"
            error = WireError(500, "InternalError", message)
            response = render_error(self.wire_format, error, resource=scope["path"])
            await response(scope, receive, send)
