"""ListObjects (V1) and ListObjectsV2."""

from __future__ import annotations

import base64
import binascii

from fastapi import Request, Response

from servicekit.errors import InvalidInput
from services.skystore.proxy.auth import Caller
from services.skystore.proxy.context import Proxy
from services.skystore.proxy.s3api import S3Request
from services.skystore.proxy.xml import Node, encode_key, iso, xml_response
from services.skystore.schemas import ListPage

__all__ = ["list_objects", "list_objects_v2"]

MAX_KEYS = 1000


def max_keys_of(value: str | None) -> int:
    if value is None:
        return MAX_KEYS
    if not value.isdigit():
        raise InvalidInput(
            "max-keys must be a non-negative integer",
            detail={"ArgumentName": "max-keys", "ArgumentValue": value},
        )
    return min(int(value), MAX_KEYS)


def url_encoding(s3: S3Request) -> bool:
    encoding = s3.query.get("encoding-type")
    if encoding not in (None, "url"):
        raise InvalidInput(
            "Invalid Encoding Method specified in Request",
            detail={"ArgumentName": "encoding-type"},
        )
    return encoding == "url"


def _entries(page: ListPage, url: bool) -> list[Node]:
    nodes: list[Node] = [
        (
            "Contents",
            [
                ("Key", encode_key(o.key, url)),
                ("LastModified", iso(o.last_modified)),
                ("ETag", f'"{o.etag}"'),
                ("Size", o.size or 0),
                ("StorageClass", "STANDARD"),
            ],
        )
        for o in page.contents
    ]
    nodes += [("CommonPrefixes", [("Prefix", encode_key(p, url))]) for p in page.common_prefixes]
    return nodes


async def _page(
    proxy: Proxy, s3: S3Request, caller: Caller, marker: str, max_keys: int
) -> ListPage:
    await proxy.bucket(s3.bucket, caller, write=False)
    query = s3.query
    return await proxy.locator.list_objects(
        s3.bucket,
        prefix=query.get("prefix", ""),
        delimiter=query.get("delimiter", ""),
        marker=marker,
        max_keys=max_keys,
    )


def _head(s3: S3Request, url: bool, max_keys: int) -> list[Node]:
    query = s3.query
    nodes: list[Node] = [("Name", s3.bucket), ("Prefix", encode_key(query.get("prefix", ""), url))]
    if "delimiter" in query:
        nodes.append(("Delimiter", encode_key(query["delimiter"], url)))
    nodes.append(("MaxKeys", max_keys))
    if url:
        nodes.append(("EncodingType", "url"))
    return nodes


async def list_objects(proxy: Proxy, s3: S3Request, caller: Caller, request: Request) -> Response:
    url, max_keys = url_encoding(s3), max_keys_of(s3.query.get("max-keys"))
    marker = s3.query.get("marker", "")
    page = await _page(proxy, s3, caller, marker, max_keys)
    nodes = _head(s3, url, max_keys)
    nodes += [("Marker", encode_key(marker, url)), ("IsTruncated", page.is_truncated)]
    if page.is_truncated and page.next_marker:
        nodes.append(("NextMarker", encode_key(page.next_marker, url)))
    return xml_response("ListBucketResult", nodes + _entries(page, url))


def _token(marker: str) -> str:
    return base64.urlsafe_b64encode(marker.encode()).decode()


def _untoken(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput(
            "The continuation token provided is incorrect",
            detail={"ArgumentName": "continuation-token"},
        ) from None


async def list_objects_v2(
    proxy: Proxy, s3: S3Request, caller: Caller, request: Request
) -> Response:
    url, max_keys = url_encoding(s3), max_keys_of(s3.query.get("max-keys"))
    token = s3.query.get("continuation-token")
    start_after = s3.query.get("start-after", "")
    marker = _untoken(token) if token else start_after
    page = await _page(proxy, s3, caller, marker, max_keys)
    nodes = _head(s3, url, max_keys)
    nodes.append(("KeyCount", len(page.contents) + len(page.common_prefixes)))
    nodes.append(("IsTruncated", page.is_truncated))
    if token:
        nodes.append(("ContinuationToken", token))
    if page.is_truncated and page.next_marker:
        nodes.append(("NextContinuationToken", _token(page.next_marker)))
    if start_after:
        nodes.append(("StartAfter", encode_key(start_after, url)))
    return xml_response("ListBucketResult", nodes + _entries(page, url))
