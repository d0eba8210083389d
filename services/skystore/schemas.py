"""What the locator's internal API carries; the proxy's locator client parses the same models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "AccessKey",
    "Bucket",
    "BucketCreate",
    "BucketEviction",
    "Committed",
    "Eviction",
    "Garbage",
    "Link",
    "ListPage",
    "ListedObject",
    "Locator",
    "ObjectInfo",
    "PhysicalBucket",
    "Region",
    "UploadComplete",
    "UploadStart",
]


# How unread evictable replicas go: never, after a fixed TTL, or after the break-even time.
Eviction = Literal["none", "fixed_ttl", "t_even"]


MAX_LAYOUT = 16 * 1024  # the longest Locator.layout kept (~500 SeaweedFS chunks)


class BucketEviction(BaseModel):
    """A bucket's own eviction; None = the locator's setting."""

    eviction: Eviction | None = None
    replica_ttl: float | None = Field(None, gt=0, description="seconds an unread replica stays")


class Region(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    endpoint: str
    # `env:PREFIX` or `file:/path#profile`: where the S3 credentials are, never the secret.
    credentials: str
    storage_cost: float = Field(0.023, ge=0, description="$ per GB-month")


class Link(BaseModel):
    src: str
    dst: str
    latency_ms: float = Field(ge=0)
    egress_cost: float = Field(ge=0, description="$ per GB from src to dst")


class AccessKey(BaseModel):
    key_id: str
    principal: str
    secret: str


class PhysicalBucket(BaseModel):
    region: str
    name: str
    status: str


class BucketCreate(BaseModel):
    name: str
    owner: str
    regions: list[str] = Field(min_length=1, description="where physical buckets are made")
    base_region: str
    acl: dict[str, Any] = Field(default_factory=dict)
    policy: str | None = None
    eviction: BucketEviction = Field(default_factory=BucketEviction)


class Bucket(BaseModel):
    id: int
    name: str
    owner: str
    acl: dict[str, Any]
    policy: str
    eviction: BucketEviction = Field(default_factory=BucketEviction)
    base_region: str
    status: str
    created: datetime
    physical: list[PhysicalBucket] = Field(default_factory=list)

    def physical_in(self, region: str) -> PhysicalBucket | None:
        return next((p for p in self.physical if p.region == region), None)


class Locator(BaseModel):
    id: int
    region: str
    physical_bucket: str
    physical_key: str
    physical_upload_id: str | None = None
    status: str
    is_base: bool
    last_access: datetime
    # Where the bytes lie inside the region's store, as the proxy that wrote the copy found
    # them (proxy/seaweed_reads.py: a SeaweedFS chunk list), so a reader need not ask; opaque
    # to the locator.
    layout: str | None = None


class ObjectInfo(BaseModel):
    id: int
    uid: str
    bucket: str
    key: str
    generation: int | None
    status: str
    owner: str
    size: int | None
    etag: str | None
    content_type: str
    metadata: dict[str, str]
    upload_id: str | None
    started: datetime
    last_modified: datetime | None
    checksum: str | None = None
    locators: list[Locator] = Field(default_factory=list)

    def ready_in(self, region: str) -> Locator | None:
        return next((c for c in self.locators if c.region == region and c.status == "ready"), None)


class UploadStart(BaseModel):
    bucket: str
    key: str = Field(min_length=1, max_length=1024)
    owner: str
    regions: list[str] = Field(min_length=1, description="where copies are written")
    base_region: str
    content_type: str = "binary/octet-stream"
    metadata: dict[str, str] = Field(default_factory=dict)
    multipart: bool = False


class UploadComplete(BaseModel):
    size: int = Field(ge=0)
    etag: str
    regions: list[str] = Field(min_length=1, description="where copies were written")
    checksum: str | None = Field(
        None, max_length=200, description="the verified x-amz-checksum-*: <algorithm>:<base64>"
    )
    layouts: dict[str, Annotated[str, Field(max_length=MAX_LAYOUT)]] = Field(
        default_factory=dict,
        max_length=16,
        description="region → where the copy's bytes lie in its store (Locator.layout)",
    )


class Garbage(BaseModel):
    """A physical copy to remove: an overwritten, deleted, evicted or rolled-back one."""

    locator_id: int
    object_id: int
    region: str
    physical_bucket: str
    physical_key: str
    physical_upload_id: str | None


class Committed(BaseModel):
    """A committed write: the version now listed, and the copies of the one it replaced."""

    object: ObjectInfo
    retired: list[Garbage]


class ListedObject(BaseModel):
    """One key of a listing: what ListObjects and ListObjectVersions answer with."""

    key: str
    size: int | None
    etag: str | None
    last_modified: datetime | None
    owner: str


class ListPage(BaseModel):
    contents: list[ListedObject]
    common_prefixes: list[str]
    is_truncated: bool
    next_marker: str | None
