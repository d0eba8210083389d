"""An S3 REST request, parsed into one typed operation before anything acts on it (path style)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import unquote

from starlette.datastructures import Headers
from starlette.requests import Request

from servicekit.errors import ExtractError, MethodNotAllowed

__all__ = ["Op", "S3Request", "parse_request"]


class Op(StrEnum):
    LIST_BUCKETS = "ListBuckets"
    CREATE_BUCKET = "CreateBucket"
    DELETE_BUCKET = "DeleteBucket"
    HEAD_BUCKET = "HeadBucket"
    GET_BUCKET_LOCATION = "GetBucketLocation"
    LIST_OBJECTS = "ListObjects"
    LIST_OBJECTS_V2 = "ListObjectsV2"
    LIST_MULTIPART_UPLOADS = "ListMultipartUploads"
    DELETE_OBJECTS = "DeleteObjects"
    PUT_OBJECT = "PutObject"
    COPY_OBJECT = "CopyObject"
    GET_OBJECT = "GetObject"
    HEAD_OBJECT = "HeadObject"
    DELETE_OBJECT = "DeleteObject"
    CREATE_MULTIPART_UPLOAD = "CreateMultipartUpload"
    UPLOAD_PART = "UploadPart"
    UPLOAD_PART_COPY = "UploadPartCopy"
    COMPLETE_MULTIPART_UPLOAD = "CompleteMultipartUpload"
    ABORT_MULTIPART_UPLOAD = "AbortMultipartUpload"
    LIST_PARTS = "ListParts"
    GET_BUCKET_ACL = "GetBucketAcl"
    PUT_BUCKET_ACL = "PutBucketAcl"
    GET_OBJECT_ACL = "GetObjectAcl"
    PUT_OBJECT_ACL = "PutObjectAcl"
    GET_BUCKET_VERSIONING = "GetBucketVersioning"
    LIST_OBJECT_VERSIONS = "ListObjectVersions"


# Sub-resources this proxy does not implement: answered 501, never mistaken for a plain GET/PUT.
UNSUPPORTED = frozenset(
    {
        "accelerate",
        "analytics",
        "attributes",
        "cors",
        "encryption",
        "intelligent-tiering",
        "inventory",
        "legal-hold",
        "lifecycle",
        "logging",
        "metrics",
        "notification",
        "object-lock",
        "ownershipControls",
        "policy",
        "policyStatus",
        "publicAccessBlock",
        "replication",
        "requestPayment",
        "restore",
        "retention",
        "select",
        "tagging",
        "torrent",
        "website",
    }
)


class NotImplementedByProxy(ExtractError):
    status = 501
    default_code = "NotImplemented"


@dataclass(frozen=True)
class S3Request:
    op: Op
    method: str
    raw_path: str
    bucket: str
    key: str
    pairs: list[tuple[str, str]]
    headers: Headers
    raw_headers: list[tuple[str, str]] = field(repr=False)

    @property
    def query(self) -> dict[str, str]:
        return dict(self.pairs)


# (method, has key) → the operation, refined by sub-resources in the query.
def _bucket_op(method: str, query: dict[str, str]) -> Op:
    if "acl" in query and method in ("GET", "PUT"):
        return Op.GET_BUCKET_ACL if method == "GET" else Op.PUT_BUCKET_ACL
    if method == "GET" and "versioning" in query:
        return Op.GET_BUCKET_VERSIONING
    if method == "GET" and "versions" in query:
        return Op.LIST_OBJECT_VERSIONS
    if method == "GET":
        if "location" in query:
            return Op.GET_BUCKET_LOCATION
        if "uploads" in query:
            return Op.LIST_MULTIPART_UPLOADS
        return Op.LIST_OBJECTS_V2 if query.get("list-type") == "2" else Op.LIST_OBJECTS
    if method == "PUT":
        return Op.CREATE_BUCKET
    if method == "DELETE":
        return Op.DELETE_BUCKET
    if method == "HEAD":
        return Op.HEAD_BUCKET
    if method == "POST" and "delete" in query:
        return Op.DELETE_OBJECTS
    raise MethodNotAllowed(
        f"{method} on a bucket is not supported", code="MethodNotAllowed", detail={"Method": method}
    )


def _object_op(method: str, query: dict[str, str], headers: Headers) -> Op:
    if "acl" in query and method in ("GET", "PUT"):
        return Op.GET_OBJECT_ACL if method == "GET" else Op.PUT_OBJECT_ACL
    upload = "uploadId" in query
    if method == "PUT":
        if upload:
            copy = "x-amz-copy-source" in headers
            return Op.UPLOAD_PART_COPY if copy else Op.UPLOAD_PART
        return Op.COPY_OBJECT if "x-amz-copy-source" in headers else Op.PUT_OBJECT
    if method == "GET":
        return Op.LIST_PARTS if upload else Op.GET_OBJECT
    if method == "HEAD":
        return Op.HEAD_OBJECT
    if method == "DELETE":
        return Op.ABORT_MULTIPART_UPLOAD if upload else Op.DELETE_OBJECT
    if method == "POST":
        if "uploads" in query:
            return Op.CREATE_MULTIPART_UPLOAD
        if upload:
            return Op.COMPLETE_MULTIPART_UPLOAD
    raise MethodNotAllowed(
        f"{method} on an object is not supported",
        code="MethodNotAllowed",
        detail={"Method": method},
    )


def parse_request(request: Request) -> S3Request:
    raw_path = request.scope.get("raw_path", b"").decode("latin-1").partition("?")[0]
    raw_path = raw_path or request.url.path
    path = unquote(raw_path)
    bucket, _, key = path.lstrip("/").partition("/")
    # Not parse_qsl: it reads '+' as a space, but S3 clients send a space as %20, and a '+'
    # they left unescaped means '+'.
    pairs = [(unquote(k), unquote(v)) for k, v in _raw_pairs(request)]
    query = dict(pairs)
    method = request.method
    unsupported = sorted(UNSUPPORTED & set(query))
    if unsupported:
        raise NotImplementedByProxy(
            f"the ?{unsupported[0]} sub-resource is not implemented by SkyStore",
            detail={"Method": method, "ResourceType": unsupported[0]},
        )
    if not bucket:
        if method != "GET":
            raise MethodNotAllowed(f"{method} / is not supported", code="MethodNotAllowed")
        op = Op.LIST_BUCKETS
    elif not key:
        op = _bucket_op(method, query)
    else:
        op = _object_op(method, query, request.headers)
    raw_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]]
    return S3Request(op, method, raw_path, bucket, key, pairs, request.headers, raw_headers)


def _raw_pairs(request: Request) -> list[tuple[str, str]]:
    raw = request.scope.get("query_string", b"").decode("latin-1")
    pairs = []
    for item in raw.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        pairs.append((name, value))
    return pairs
