"""JSON log lines on stderr: one object per line, with the request and trace they belong to."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from servicekit.middleware.request_id import current_request_id
from servicekit.tracing import current_trace_id

# Attributes every LogRecord has; anything else on a record came in through `extra=`.
# uvicorn's `color_message` repeats `msg` with terminal colour codes.
_RECORD_ATTRIBUTES = frozenset(
    [
        *vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)),
        "message",
        "asctime",
        "color_message",
    ]
)

_LEVELS = ("debug", "info", "warning", "error", "critical")


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object; `extra=` fields become members of it.

    The request id and trace id are read when the record is formatted, which handlers do in
    the thread and context that logged it.
    """

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "service": self.service,
        }
        if (request_id := current_request_id()) is not None:
            line["request_id"] = request_id
        if (trace_id := current_trace_id()) is not None:
            line["trace_id"] = trace_id
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class _JsonHandler(logging.StreamHandler):
    """The handler `configure_logging` installs, so that calling it again replaces it."""


def configure_logging(service: str, level: str) -> None:
    """Send every log record (ours, uvicorn's, libraries') as JSON lines to stderr."""
    if level.lower() not in _LEVELS:
        raise ValueError(f"log level {level!r}: expected one of {', '.join(_LEVELS)}")
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _JsonHandler)]:
        root.removeHandler(handler)
    handler = _JsonHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root.addHandler(handler)
    root.setLevel(level.upper())
