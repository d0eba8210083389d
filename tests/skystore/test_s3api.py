"""S3 requests become typed operations before anything acts on them."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from servicekit.errors import MethodNotAllowed
from services.skystore.proxy.s3api import NotImplementedByProxy, Op, parse_request


def _request(method: str, target: str, headers: dict[str, str] | None = None) -> Request:
    path, _, query = target.partition("?")
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    return Request(scope)


@pytest.mark.parametrize(
    ("method", "target", "headers", "op"),
    [
        ("GET", "/", {}, Op.LIST_BUCKETS),
        ("PUT", "/b", {}, Op.CREATE_BUCKET),
        ("GET", "/b?list-type=2&prefix=a", {}, Op.LIST_OBJECTS_V2),
        ("GET", "/b", {}, Op.LIST_OBJECTS),
        ("GET", "/b?location", {}, Op.GET_BUCKET_LOCATION),
        ("GET", "/b?uploads", {}, Op.LIST_MULTIPART_UPLOADS),
        ("GET", "/b?versions", {}, Op.LIST_OBJECT_VERSIONS),
        ("POST", "/b?delete", {}, Op.DELETE_OBJECTS),
        ("PUT", "/b/k", {}, Op.PUT_OBJECT),
        ("PUT", "/b/k", {"x-amz-copy-source": "/b/src"}, Op.COPY_OBJECT),
        ("POST", "/b/k?uploads", {}, Op.CREATE_MULTIPART_UPLOAD),
        ("PUT", "/b/k?partNumber=1&uploadId=u", {}, Op.UPLOAD_PART),
        ("PUT", "/b/k?partNumber=1&uploadId=u", {"x-amz-copy-source": "b/s"}, Op.UPLOAD_PART_COPY),
        ("POST", "/b/k?uploadId=u", {}, Op.COMPLETE_MULTIPART_UPLOAD),
        ("DELETE", "/b/k?uploadId=u", {}, Op.ABORT_MULTIPART_UPLOAD),
        ("GET", "/b/k?uploadId=u", {}, Op.LIST_PARTS),
        ("GET", "/b/k?acl", {}, Op.GET_OBJECT_ACL),
        ("HEAD", "/b/k", {}, Op.HEAD_OBJECT),
    ],
)
def test_requests_route_to_their_operation(
    method: str, target: str, headers: dict[str, str], op: Op
) -> None:
    assert parse_request(_request(method, target, headers)).op == op


def test_keys_are_decoded_once_and_keep_their_slashes() -> None:
    parsed = parse_request(_request("GET", "/b/dir/a%20b%2Bc/%C3%A9"))
    assert (parsed.bucket, parsed.key) == ("b", "dir/a b+c/é")


def test_a_literal_plus_in_the_query_stays_a_plus() -> None:
    parsed = parse_request(_request("GET", "/b?prefix=a+b&delimiter=%2F"))
    assert parsed.query["prefix"] == "a+b" and parsed.query["delimiter"] == "/"


def test_unimplemented_sub_resources_are_501_not_a_plain_get() -> None:
    with pytest.raises(NotImplementedByProxy) as refused:
        parse_request(_request("GET", "/b?policy"))
    assert refused.value.status == 501 and refused.value.code == "NotImplemented"


def test_unknown_bucket_methods_are_refused() -> None:
    with pytest.raises(MethodNotAllowed):
        parse_request(_request("POST", "/b"))
