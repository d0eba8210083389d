"""The locator's error answers as servicekit errors, whether they came over REST or NATS."""

from __future__ import annotations

import json

from servicekit.errors import (
    BadRequest,
    Conflict,
    ExtractError,
    Forbidden,
    NotFound,
    UpstreamError,
)

__all__ = ["locator_error"]

_BY_STATUS: dict[int, type[ExtractError]] = {
    400: BadRequest,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
}


def locator_error(status: int, content: bytes) -> ExtractError:
    try:
        body = json.loads(content)
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = str(body.get("detail") or content[:200].decode(errors="replace"))
    code = body.get("code")
    detail = {k: v for k, v in body.items() if k[:1].isupper()}
    kind = _BY_STATUS.get(status)
    if kind is not None:
        error = kind(message, code=code, detail=detail)
        error.status = status  # type: ignore[misc]
        return error
    return UpstreamError(f"locator answered {status}: {message}")
