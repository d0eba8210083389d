"""The gateway's errors on the wire: Nuvla JSON under /api/, problem+json everywhere else.

Adds GatewayTimeout (504, "GatewayTimeout") under servicekit's ExtractError: an upstream
took longer than the configured timeout to answer.
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from servicekit.errors import ExtractError
from servicekit.wire_errors import (
    WireError,
    WireFormat,
    from_http_exception,
    from_validation_error,
    render_error,
)

__all__ = ["GatewayTimeout", "install_gateway_error_handlers", "wire_format_for"]


class GatewayTimeout(ExtractError):
    status = 504
    default_code = "GatewayTimeout"


def wire_format_for(path: str) -> WireFormat:
    return WireFormat.NUVLA if path == "/api" or path.startswith("/api/") else WireFormat.PROBLEM


def install_gateway_error_handlers(app: FastAPI) -> None:
    """Replace the handlers create_service_app installed with ones choosing the format by path."""

    async def on_extract_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ExtractError)
        path = request.url.path
        return render_error(wire_format_for(path), WireError.of(exc), resource=path)

    async def on_http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        path = request.url.path
        return render_error(wire_format_for(path), from_http_exception(request, exc), resource=path)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        path = request.url.path
        return render_error(wire_format_for(path), from_validation_error(exc), resource=path)

    app.add_exception_handler(ExtractError, on_extract_error)
    app.add_exception_handler(HTTPException, on_http_exception)
    app.add_exception_handler(RequestValidationError, on_validation_error)
