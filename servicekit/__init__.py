"""servicekit: the shared kernel every EXTRACT service is built from.

The names below are the public surface; each is imported from its module on first use, so
`import servicekit.infra` (the CLI) does not pay for aiobotocore, nats or SQLAlchemy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # app and serving
    "ServiceSettings": "servicekit.settings",
    "create_service_app": "servicekit.app",
    "serve": "servicekit.serve",
    "WireFormat": "servicekit.wire_errors",
    "install_error_handlers": "servicekit.wire_errors",
    # errors
    "BadRequest": "servicekit.errors",
    "Conflict": "servicekit.errors",
    "ExtractError": "servicekit.errors",
    "Forbidden": "servicekit.errors",
    "InvalidInput": "servicekit.errors",
    "MethodNotAllowed": "servicekit.errors",
    "NotAcceptable": "servicekit.errors",
    "NotFound": "servicekit.errors",
    "PayloadTooLarge": "servicekit.errors",
    "PreconditionFailed": "servicekit.errors",
    "ServiceUnavailable": "servicekit.errors",
    "TooManyRequests": "servicekit.errors",
    "Unauthorized": "servicekit.errors",
    "UpstreamError": "servicekit.errors",
    # database
    "JSONDocument": "servicekit.db",
    "create_engine": "servicekit.db",
    "database_check": "servicekit.db",
    "migrate_service_database": "servicekit.migrate",
    "session_factory": "servicekit.db",
    # events
    "CloudEvent": "servicekit.cloudevents",
    "EventPublisher": "servicekit.events",
    "EventSubscriber": "servicekit.events",
    "OutboxRelay": "servicekit.outbox",
    "connect_nats": "servicekit.events",
    "consume_once": "servicekit.inbox",
    "enqueue": "servicekit.outbox",
    "ensure_stream": "servicekit.events",
    "nats_check": "servicekit.events",
    # object storage
    "S3Endpoint": "servicekit.infra.seaweed",
    "s3_check": "servicekit.s3",
    "s3_client": "servicekit.s3",
    "stream_hash": "servicekit.s3",
    "verify_with_check_value": "servicekit.s3",
    # security
    "Identity": "servicekit.security",
    "IdentityVerifier": "servicekit.security",
    "SigningKey": "servicekit.security",
    "current_identity": "servicekit.security",
    "sign_detached": "servicekit.security",
    "sign_event": "servicekit.security",
    "verify_detached": "servicekit.security",
    "verify_event": "servicekit.security",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'servicekit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
