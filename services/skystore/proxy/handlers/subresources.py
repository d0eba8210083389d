"""ACLs (owner-only, shown as S3 shows them), bucket versioning (not enabled yet), and
ListObjectVersions as S3 answers it for an unversioned bucket (every version id `null`)."""

from __future__ import annotations

from xml.sax.saxutils import escape

from fastapi import Request, Response

from services.skystore.proxy.auth import Caller
from services.skystore.proxy.context import Proxy
from services.skystore.proxy.handlers.listing import MAX_KEYS, max_keys_of, url_encoding
from services.skystore.proxy.s3api import NotImplementedByProxy, S3Request
from services.skystore.proxy.xml import NS, Node, encode_key, iso, xml_response

__all__ = ["get_acl", "get_bucket_versioning", "list_object_versions", "put_acl"]

_XSI = "http://www.w3.org/2001/XMLSchema-instance"


async def get_acl(proxy: Proxy, s3: S3Request, caller: Caller, request: Request) -> Response:
    bucket = await proxy.bucket(s3.bucket, caller, write=False)
    owner = bucket.owner
    if s3.key:
        owner = (await proxy.object(s3.bucket, s3.key)).owner
    who = f"<ID>{escape(owner)}</ID><DisplayName>{escape(owner)}</DisplayName>"
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<AccessControlPolicy xmlns="{NS}">'
        f"<Owner>{who}</Owner><AccessControlList><Grant>"
        f'<Grantee xmlns:xsi="{_XSI}" xsi:type="CanonicalUser">{who}</Grantee>'
        "<Permission>FULL_CONTROL</Permission></Grant></AccessControlList></AccessControlPolicy>"
    )
    return Response(body.encode(), 200, media_type="application/xml")


async def put_acl(proxy: Proxy, s3: S3Request, caller: Caller, request: Request) -> Response:
    await proxy.bucket(s3.bucket, caller, write=True)
    canned = s3.headers.get("x-amz-acl", "private")
    if canned != "private" or await request.body():
        raise NotImplementedByProxy(
            "only the canned ACL 'private' is supported; share a bucket through its SkyStore ACL",
            detail={"Method": "PUT", "ResourceType": "acl"},
        )
    return Response(status_code=200)


async def get_bucket_versioning(
    proxy: Proxy, s3: S3Request, caller: Caller, request: Request
) -> Response:
    await proxy.bucket(s3.bucket, caller, write=False)
    return xml_response("VersioningConfiguration", [])


async def list_object_versions(
    proxy: Proxy, s3: S3Request, caller: Caller, request: Request
) -> Response:
    await proxy.bucket(s3.bucket, caller, write=False)
    url, max_keys = url_encoding(s3), max_keys_of(s3.query.get("max-keys"))
    query = s3.query
    marker = query.get("key-marker", "")
    page = await proxy.locator.list_objects(
        s3.bucket,
        prefix=query.get("prefix", ""),
        delimiter=query.get("delimiter", ""),
        marker=marker,
        max_keys=max_keys,
    )
    nodes: list[Node] = [
        ("Name", s3.bucket),
        ("Prefix", encode_key(query.get("prefix", ""), url)),
        ("KeyMarker", encode_key(marker, url)),
        ("VersionIdMarker", query.get("version-id-marker", "")),
        ("MaxKeys", max_keys or MAX_KEYS),
        ("IsTruncated", page.is_truncated),
    ]
    if "delimiter" in query:
        nodes.append(("Delimiter", encode_key(query["delimiter"], url)))
    if page.is_truncated and page.next_marker:
        nodes += [
            ("NextKeyMarker", encode_key(page.next_marker, url)),
            ("NextVersionIdMarker", "null"),
        ]
    nodes += [
        (
            "Version",
            [
                ("Key", encode_key(o.key, url)),
                ("VersionId", "null"),
                ("IsLatest", True),
                ("LastModified", iso(o.last_modified)),
                ("ETag", f'"{o.etag}"'),
                ("Size", o.size or 0),
                ("Owner", [("ID", o.owner), ("DisplayName", o.owner)]),
                ("StorageClass", "STANDARD"),
            ],
        )
        for o in page.contents
    ]
    nodes += [("CommonPrefixes", [("Prefix", encode_key(p, url))]) for p in page.common_prefixes]
    if url:
        nodes.append(("EncodingType", "url"))
    return xml_response("ListVersionsResult", nodes)
