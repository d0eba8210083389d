"""ListBuckets, CreateBucket, DeleteBucket, HeadBucket, GetBucketLocation."""

from __future__ import annotations

import logging

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import Request, Response
from pydantic import ValidationError

from servicekit.errors import ExtractError, InvalidInput
from servicekit.s3 import translate_s3_error
from services.skystore.proxy.auth import Caller
from services.skystore.proxy.context import Proxy
from services.skystore.proxy.s3api import S3Request
from services.skystore.proxy.xml import iso, parse_location_constraint, xml_response
from services.skystore.schemas import Bucket, BucketCreate, BucketEviction

__all__ = [
    "create_bucket",
    "delete_bucket",
    "get_bucket_location",
    "head_bucket",
    "list_buckets",
]

log = logging.getLogger(__name__)
# Chooses the bucket's placement policy at CreateBucket (default: the locator's).
POLICY_HEADER = "x-skystore-placement"
# The bucket's own eviction of its evictable replicas (default: the locator's settings).
EVICTION_HEADER = "x-skystore-eviction"
REPLICA_TTL_HEADER = "x-skystore-replica-ttl"


def bucket_eviction(s3: S3Request) -> BucketEviction:
    """The eviction headers of CreateBucket; a bad value is InvalidArgument naming it."""
    kind = s3.headers.get(EVICTION_HEADER) or None
    ttl = s3.headers.get(REPLICA_TTL_HEADER) or None
    try:
        return BucketEviction(eviction=kind, replica_ttl=ttl)
    except ValidationError as exc:
        wrong = exc.errors()[0]["loc"][0]
        header = EVICTION_HEADER if wrong == "eviction" else REPLICA_TTL_HEADER
        raise InvalidInput(
            f"{header} must be one of none, fixed_ttl, t_even"
            if wrong == "eviction"
            else f"{header} must be a number of seconds above 0",
            detail={"ArgumentName": header, "ArgumentValue": s3.headers.get(header, "")},
        ) from exc


async def list_buckets(proxy: Proxy, s3: S3Request, caller: Caller, request: Request) -> Response:
    buckets = await proxy.locator.buckets(owner=caller.principal)
    return xml_response(
        "ListAllMyBucketsResult",
        [
            ("Owner", [("ID", caller.principal), ("DisplayName", caller.principal)]),
            (
                "Buckets",
                [("Bucket", [("Name", b.name), ("CreationDate", iso(b.created))]) for b in buckets],
            ),
        ],
    )


async def _remove_physical(proxy: Proxy, bucket: Bucket) -> None:
    for physical in bucket.physical:
        try:
            await proxy.regions.client(physical.region).delete_bucket(Bucket=physical.name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchBucket":
                raise translate_s3_error(exc, bucket=physical.name) from exc


async def create_bucket(proxy: Proxy, s3: S3Request, caller: Caller, request: Request) -> Response:
    eviction = bucket_eviction(s3)
    constraint = parse_location_constraint(await request.body())
    base = proxy.region
    if constraint and constraint != "us-east-1":
        if constraint not in proxy.regions.names:
            raise InvalidInput(
                f"unknown location constraint {constraint!r}; regions: "
                + ", ".join(proxy.regions.names),
                code="InvalidLocationConstraint",
            )
        base = constraint
    plan = await proxy.locator.start_create_bucket(
        BucketCreate(
            name=s3.bucket,
            owner=caller.principal,
            regions=proxy.regions.names,
            base_region=base,
            policy=s3.headers.get(POLICY_HEADER) or None,
            eviction=eviction,
        )
    )
    try:
        for physical in plan.physical:
            try:
                await proxy.regions.client(physical.region).create_bucket(Bucket=physical.name)
            except (BotoCoreError, ClientError) as exc:
                raise translate_s3_error(exc, bucket=physical.name) from exc
        await proxy.locator.complete_create_bucket(s3.bucket)
    except ExtractError:
        try:
            await _remove_physical(proxy, plan)
            await proxy.locator.bucket_removed(s3.bucket)
        except (ExtractError, BotoCoreError) as exc:
            log.warning("bucket %s left for the collector: %s", s3.bucket, exc)
        raise
    return Response(status_code=200, headers={"Location": f"/{s3.bucket}"})


async def delete_bucket(proxy: Proxy, s3: S3Request, caller: Caller, request: Request) -> Response:
    await proxy.bucket(s3.bucket, caller, write=True)
    plan = await proxy.locator.start_delete_bucket(s3.bucket)
    proxy.forget_bucket(s3.bucket)
    try:
        await _remove_physical(proxy, plan)
        await proxy.locator.bucket_removed(s3.bucket)
    except (ExtractError, BotoCoreError) as exc:
        # Already invisible; the collector empties and removes what is left.
        log.warning("bucket %s left for the collector: %s", s3.bucket, exc)
    return Response(status_code=204)


async def head_bucket(proxy: Proxy, s3: S3Request, caller: Caller, request: Request) -> Response:
    bucket = await proxy.bucket(s3.bucket, caller, write=False)
    return Response(status_code=200, headers={"x-amz-bucket-region": bucket.base_region})


async def get_bucket_location(
    proxy: Proxy, s3: S3Request, caller: Caller, request: Request
) -> Response:
    bucket = await proxy.bucket(s3.bucket, caller, write=False)
    return xml_response("LocationConstraint", [], text=bucket.base_region)
