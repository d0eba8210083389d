"""GET/HEAD preconditions and byte ranges, decided on the locator metadata before bytes move."""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime

from starlette.datastructures import Headers

from servicekit.errors import ExtractError, PreconditionFailed
from services.skystore.schemas import ObjectInfo

__all__ = ["NotModified", "RangeNotSatisfiable", "check_preconditions", "http_date", "parse_range"]


class NotModified(ExtractError):
    status = 304
    default_code = "NotModified"


class RangeNotSatisfiable(ExtractError):
    status = 416
    default_code = "InvalidRange"


def http_date(value: datetime) -> str:
    return format_datetime(value.replace(microsecond=0), usegmt=True)


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # S3 ignores a date it cannot read


def _etags(value: str) -> set[str]:
    return {part.strip().removeprefix("W/").strip('"') for part in value.split(",")}


def check_preconditions(headers: Headers, info: ObjectInfo) -> None:
    """If-Match / If-Unmodified-Since → 412; If-None-Match / If-Modified-Since → 304."""
    etag = info.etag or ""
    modified = (info.last_modified or info.started).replace(microsecond=0)
    if_match = headers.get("if-match")
    if if_match is not None:
        if "*" not in _etags(if_match) and etag not in _etags(if_match):
            raise PreconditionFailed(
                "At least one of the pre-conditions you specified did not hold",
                code="PreconditionFailed",
                detail={"Condition": "If-Match"},
            )
    elif (since := _date(headers.get("if-unmodified-since"))) and modified > since:
        raise PreconditionFailed(
            "At least one of the pre-conditions you specified did not hold",
            code="PreconditionFailed",
            detail={"Condition": "If-Unmodified-Since"},
        )
    if_none = headers.get("if-none-match")
    not_modified = NotModified("Not Modified", headers={"ETag": f'"{etag}"'})
    if if_none is not None:
        if "*" in _etags(if_none) or etag in _etags(if_none):
            raise not_modified
    elif (since := _date(headers.get("if-modified-since"))) and modified <= since:
        raise not_modified


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single `bytes=` range, None to send everything."""
    if not value or not value.startswith("bytes=") or "," in value:
        return None
    first_text, dash, last_text = value[6:].strip().partition("-")
    if not dash or not (first_text.isdigit() or last_text.isdigit()):
        return None
    if not first_text:
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - suffix), size - 1
    first = int(first_text)
    if first >= size:
        raise _unsatisfiable(size)
    last = int(last_text) if last_text.isdigit() else size - 1
    if last < first:
        return None  # not a valid range: ignored, as S3 does
    return first, min(last, size - 1)


def _unsatisfiable(size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(
        "The requested range is not satisfiable",
        headers={"Content-Range": f"bytes */{size}"},
        detail={"ActualObjectSize": size},
    )
