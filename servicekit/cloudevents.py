"""CloudEvents 1.0 in JSON structured mode: the payload of every event on the platform."""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from servicekit.errors import InvalidInput

SPECVERSION = "1.0"
TRACEPARENT = "traceparent"  # W3C distributed tracing extension
SIGNATURE = "signature"  # detached ES256 signature over the event, added by the signer

_CONTEXT_ATTRIBUTES = frozenset(
    {"specversion", "id", "source", "type", "subject", "time", "datacontenttype"}
)
_DATA_MEMBERS = frozenset({"data", "data_base64"})
# CloudEvents 1.0 §3.1.1: extension names are lower-case ASCII letters and digits.
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


@dataclass
class CloudEvent:
    """One event. `data` is any JSON value, or bytes (sent as `data_base64`).

    `time` is None only for events parsed from producers that left it out (it is optional in
    the specification); events made here always carry it.
    """

    type: str
    source: str
    data: Any
    subject: str | None = None
    id: str = field(default_factory=_new_id)
    time: datetime | None = field(default_factory=_utc_now)
    datacontenttype: str = "application/json"
    extensions: dict[str, str | int | bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("id", "source", "type", "datacontenttype"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise InvalidInput(
                    f"cloudevent: attribute {name!r} must be a non-empty string",
                    detail={"attribute": name},
                )
        if self.subject is not None and (not isinstance(self.subject, str) or not self.subject):
            raise InvalidInput(
                "cloudevent: attribute 'subject' must be a non-empty string when present",
                detail={"attribute": "subject"},
            )
        if self.time is not None and (
            not isinstance(self.time, datetime) or self.time.tzinfo is None
        ):
            raise InvalidInput(
                "cloudevent: attribute 'time' must be a timezone-aware datetime",
                detail={"attribute": "time"},
            )
        for name, value in self.extensions.items():
            _check_extension(name, value)

    def to_json(self) -> bytes:
        document: dict[str, Any] = {
            "specversion": SPECVERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
        }
        if self.subject is not None:
            document["subject"] = self.subject
        if self.time is not None:
            document["time"] = _format_time(self.time)
        document["datacontenttype"] = self.datacontenttype
        document.update(self.extensions)
        if isinstance(self.data, bytes | bytearray):
            document["data_base64"] = base64.b64encode(self.data).decode("ascii")
        elif self.data is not None:
            document["data"] = self.data
        try:
            return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
        except (TypeError, ValueError) as exc:
            raise InvalidInput(
                f"cloudevent {self.id}: data is not JSON-serialisable: {exc}",
                detail={"attribute": "data"},
            ) from exc

    @classmethod
    def from_json(cls, raw: bytes | str) -> CloudEvent:
        """Parse and validate; InvalidInput names what is wrong (e.g. the missing attribute)."""
        try:
            document = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidInput(f"cloudevent: not JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise InvalidInput("cloudevent: the JSON document must be an object")
        for name in ("specversion", "id", "source", "type"):
            if name not in document:
                raise InvalidInput(
                    f"cloudevent: required attribute {name!r} is missing",
                    detail={"attribute": name},
                )
        if document["specversion"] != SPECVERSION:
            raise InvalidInput(
                f"cloudevent: specversion {document['specversion']!r} is not supported; "
                f"expected {SPECVERSION!r}",
                detail={"attribute": "specversion"},
            )
        extensions = {
            name: value
            for name, value in document.items()
            if name not in _CONTEXT_ATTRIBUTES and name not in _DATA_MEMBERS
        }
        return cls(
            type=document["type"],
            source=document["source"],
            data=_parse_data(document),
            subject=document.get("subject"),
            id=document["id"],
            time=_parse_time(document["time"]) if "time" in document else None,
            datacontenttype=document.get("datacontenttype", "application/json"),
            extensions=extensions,
        )


def _check_extension(name: str, value: Any) -> None:
    if not isinstance(name, str) or not _EXTENSION_NAME.match(name):
        raise InvalidInput(
            f"cloudevent: extension name {name!r} must be 1-20 lower-case letters or digits",
            detail={"attribute": name},
        )
    if name in _CONTEXT_ATTRIBUTES or name in _DATA_MEMBERS:
        raise InvalidInput(
            f"cloudevent: {name!r} is a context attribute, not an extension",
            detail={"attribute": name},
        )
    if not isinstance(value, str | int | bool):
        raise InvalidInput(
            f"cloudevent: extension {name!r} must be a string, integer or boolean",
            detail={"attribute": name},
        )


def _parse_data(document: dict[str, Any]) -> Any:
    if "data" in document and "data_base64" in document:
        raise InvalidInput(
            "cloudevent: 'data' and 'data_base64' are mutually exclusive",
            detail={"attribute": "data_base64"},
        )
    if "data_base64" not in document:
        return document.get("data")
    encoded = document["data_base64"]
    try:
        if not isinstance(encoded, str):
            raise ValueError("not a string")
        return base64.b64decode(encoded, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise InvalidInput(
            f"cloudevent: 'data_base64' is not base64: {exc}",
            detail={"attribute": "data_base64"},
        ) from exc


def _format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse_time(text: Any) -> datetime:
    try:
        if not isinstance(text, str):
            raise ValueError("not a string")
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidInput(
            f"cloudevent: 'time' {text!r} is not an RFC 3339 timestamp",
            detail={"attribute": "time"},
        ) from exc
    if moment.tzinfo is None:
        raise InvalidInput(
            f"cloudevent: 'time' {text!r} has no UTC offset (RFC 3339 requires one)",
            detail={"attribute": "time"},
        )
    return moment
