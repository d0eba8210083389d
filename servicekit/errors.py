"""The one error hierarchy of the platform; each service maps it to its wire format in one place.

    ExtractError (500, "InternalError")
    ├── BadRequest (400, "InvalidRequest")
    │   └── InvalidInput (400, "InvalidArgument")      what the caller sent is malformed
    ├── Unauthorized (401, "Unauthorized")              no or bad credentials
    ├── Forbidden (403, "AccessDenied")                 authenticated, but not allowed
    ├── NotFound (404, "NotFound")
    ├── MethodNotAllowed (405, "MethodNotAllowed")
    ├── NotAcceptable (406, "NotAcceptable")
    ├── Conflict (409, "Conflict")                      state forbids it (e.g. a bad transition)
    ├── PreconditionFailed (412, "PreconditionFailed")
    ├── PayloadTooLarge (413, "EntityTooLarge")
    ├── TooManyRequests (429, "SlowDown")
    ├── UpstreamError (502, "BadGateway")               a dependency answered wrongly
    └── ServiceUnavailable (503, "ServiceUnavailable")  a dependency is down

`code` is the machine-readable name (S3 services pass their own, e.g. "NoSuchKey");
`detail` carries what was wrong in structured form (field, position, expected …).
"""

from __future__ import annotations

from typing import Any, ClassVar


class ExtractError(Exception):
    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "InternalError"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        detail: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.detail = detail or {}
        self.headers = headers or {}


class BadRequest(ExtractError):
    status = 400
    default_code = "InvalidRequest"


class InvalidInput(BadRequest):
    default_code = "InvalidArgument"


class Unauthorized(ExtractError):
    status = 401
    default_code = "Unauthorized"


class Forbidden(ExtractError):
    status = 403
    default_code = "AccessDenied"


class NotFound(ExtractError):
    status = 404
    default_code = "NotFound"


class MethodNotAllowed(ExtractError):
    status = 405
    default_code = "MethodNotAllowed"


class NotAcceptable(ExtractError):
    status = 406
    default_code = "NotAcceptable"


class Conflict(ExtractError):
    status = 409
    default_code = "Conflict"


class PreconditionFailed(ExtractError):
    status = 412
    default_code = "PreconditionFailed"


class PayloadTooLarge(ExtractError):
    status = 413
    default_code = "EntityTooLarge"


class TooManyRequests(ExtractError):
    status = 429
    default_code = "SlowDown"


class UpstreamError(ExtractError):
    status = 502
    default_code = "BadGateway"


class ServiceUnavailable(ExtractError):
    status = 503
    default_code = "ServiceUnavailable"
