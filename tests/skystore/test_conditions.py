"""Preconditions and ranges, decided on the locator's metadata before any bytes move."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from starlette.datastructures import Headers

from servicekit.errors import PreconditionFailed
from services.skystore.proxy.conditions import (
    NotModified,
    RangeNotSatisfiable,
    check_preconditions,
    http_date,
    parse_range,
)
from services.skystore.schemas import ObjectInfo

MODIFIED = datetime(2026, 11, 22, 8, 0, 0, 500_000, tzinfo=UTC)
INFO = ObjectInfo(
    id=1,
    uid="u",
    bucket="b",
    key="k",
    generation=1,
    status="ready",
    owner="user/a",
    size=10,
    etag="abc",
    content_type="text/plain",
    metadata={},
    upload_id=None,
    started=MODIFIED,
    last_modified=MODIFIED,
)


def _check(**headers: str) -> None:
    check_preconditions(Headers(headers), INFO)


def test_if_match_passes_on_the_etag_and_fails_otherwise() -> None:
    _check(**{"if-match": '"abc"'})
    _check(**{"if-match": "*"})
    with pytest.raises(PreconditionFailed) as failed:
        _check(**{"if-match": '"other"'})
    assert failed.value.detail["Condition"] == "If-Match"


def test_if_none_match_answers_not_modified() -> None:
    with pytest.raises(NotModified):
        _check(**{"if-none-match": '"abc"'})
    _check(**{"if-none-match": '"other"'})


def test_if_modified_since_compares_whole_seconds() -> None:
    with pytest.raises(NotModified):
        _check(**{"if-modified-since": http_date(MODIFIED)})
    _check(**{"if-modified-since": "Sat, 21 Nov 2026 08:00:00 GMT"})
    # If-None-Match takes precedence over If-Modified-Since, as in RFC 9110.
    _check(**{"if-none-match": '"other"', "if-modified-since": http_date(MODIFIED)})


def test_if_unmodified_since_fails_for_a_newer_object() -> None:
    with pytest.raises(PreconditionFailed):
        _check(**{"if-unmodified-since": "Sat, 21 Nov 2026 08:00:00 GMT"})
    _check(**{"if-unmodified-since": http_date(MODIFIED)})


def test_an_unreadable_date_is_ignored() -> None:
    _check(**{"if-modified-since": "yesterday"})


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-3", (0, 3)),
        ("bytes=5-", (5, 9)),
        ("bytes=-4", (6, 9)),
        ("bytes=8-100", (8, 9)),
        ("bytes=0-1,4-5", None),  # several ranges: S3 sends the whole object
        ("items=0-1", None),
        ("bytes=5-2", None),
        (None, None),
    ],
)
def test_ranges(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 10) == expected


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=-0"])
def test_unsatisfiable_ranges_name_the_size(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as refused:
        parse_range(header, 10)
    assert refused.value.code == "InvalidRange"
    assert refused.value.headers["Content-Range"] == "bytes */10"
