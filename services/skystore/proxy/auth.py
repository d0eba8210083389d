"""Who sent an S3 request: its SigV4 signature checked against the platform's access keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from servicekit.errors import Forbidden
from servicekit.sigv4 import SignedRequest, parse_signature, verify_signature
from services.skystore.proxy.keys import KeyCache
from services.skystore.proxy.s3api import S3Request
from services.skystore.schemas import Bucket

__all__ = ["Caller", "authenticate", "authorise"]


@dataclass(frozen=True)
class Caller:
    principal: str
    signed: SignedRequest
    signing_key: bytes


async def authenticate(
    request: S3Request, keys: KeyCache, *, now: datetime, max_skew: timedelta
) -> Caller:
    """The caller of a signed request; anonymous requests are refused (AccessDenied)."""
    signed = parse_signature(request.headers, request.query)
    if signed is None:
        raise Forbidden("Anonymous access is not allowed; sign the request (SigV4)")
    key = await keys.get(signed.key_id)
    signing_key = verify_signature(
        signed,
        secret=key.secret,
        method=request.method,
        raw_path=request.raw_path,
        query_pairs=request.pairs,
        raw_headers=request.raw_headers,
        now=now,
        max_skew=max_skew,
    )
    return Caller(key.principal, signed, signing_key)


def authorise(bucket: Bucket, caller: Caller, *, write: bool) -> None:
    """The owner may do anything; the bucket's ACL lists who else may read or write."""
    if caller.principal == bucket.owner:
        return
    allowed = bucket.acl.get("write" if write else "read", [])
    if caller.principal in allowed or (
        not write and caller.principal in bucket.acl.get("write", [])
    ):
        return
    raise Forbidden("Access Denied", detail={"BucketName": bucket.name})
