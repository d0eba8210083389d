"""The locator's tables: regions, access keys, logical and physical buckets, objects, replicas."""

from __future__ import annotations

import sqlalchemy as sa

from servicekit.db import JSONDocument, UTCDateTime

__all__ = [
    "access_keys",
    "buckets",
    "key_heads",
    "lease_horizon",
    "locators",
    "objects",
    "physical_buckets",
    "region_links",
    "regions",
    "skystore_metadata",
]

skystore_metadata = sa.MetaData()

# Object keys compare as UTF-8 bytes: SQLite's BINARY collation does, PostgreSQL's "C" does.
Key = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")

regions = sa.Table(
    "skystore_regions",
    skystore_metadata,
    sa.Column("name", sa.Text(), primary_key=True),
    sa.Column("endpoint", sa.Text(), nullable=False),
    # Where the S3 credentials are (`env:PREFIX`, `file:/path#profile`), never the secret itself.
    sa.Column("credentials", sa.Text(), nullable=False),
    sa.Column("storage_cost", sa.Float(), nullable=False),  # $ per GB-month
    sa.Column("created", UTCDateTime(), nullable=False),
)

region_links = sa.Table(
    "skystore_region_links",
    skystore_metadata,
    sa.Column(
        "src", sa.Text(), sa.ForeignKey(regions.c.name, ondelete="CASCADE"), primary_key=True
    ),
    sa.Column(
        "dst", sa.Text(), sa.ForeignKey(regions.c.name, ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("latency_ms", sa.Float(), nullable=False),
    sa.Column("egress_cost", sa.Float(), nullable=False),  # $ per GB from src to dst
)

access_keys = sa.Table(
    "skystore_access_keys",
    skystore_metadata,
    sa.Column("key_id", sa.Text(), primary_key=True),
    sa.Column("principal", sa.Text(), nullable=False),
    sa.Column("secret", sa.Text(), nullable=False),  # Fernet token of the secret access key
    sa.Column("created", UTCDateTime(), nullable=False),
)

buckets = sa.Table(
    "skystore_buckets",
    skystore_metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("name", sa.Text(), nullable=False, unique=True),
    sa.Column("owner", sa.Text(), nullable=False),
    sa.Column("acl", JSONDocument, nullable=False),
    sa.Column("policy", sa.Text(), nullable=False),
    # Eviction of this bucket's evictable replicas; NULL = the locator's EVICTION/REPLICA_TTL.
    sa.Column("eviction", sa.Text(), nullable=True),
    sa.Column("replica_ttl", sa.Float(), nullable=True),  # seconds
    sa.Column("base_region", sa.Text(), sa.ForeignKey(regions.c.name), nullable=False),
    sa.Column("status", sa.Text(), nullable=False),
    sa.Column("created", UTCDateTime(), nullable=False),
)

physical_buckets = sa.Table(
    "skystore_physical_buckets",
    skystore_metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column(
        "bucket_id", sa.Integer(), sa.ForeignKey(buckets.c.id, ondelete="CASCADE"), nullable=False
    ),
    sa.Column("region", sa.Text(), sa.ForeignKey(regions.c.name), nullable=False),
    sa.Column("name", sa.Text(), nullable=False),
    sa.Column("status", sa.Text(), nullable=False),
    sa.UniqueConstraint("bucket_id", "region"),
    sa.UniqueConstraint("region", "name"),
)

# One row per key ever written: the generation counter, and the row lock that puts concurrent
# commits to one key in order on PostgreSQL (SQLite has a single writer anyway).
key_heads = sa.Table(
    "skystore_key_heads",
    skystore_metadata,
    sa.Column(
        "bucket_id", sa.Integer(), sa.ForeignKey(buckets.c.id, ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("key", Key, primary_key=True),
    sa.Column("generation", sa.BigInteger(), nullable=False),
)

objects = sa.Table(
    "skystore_objects",
    skystore_metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("uid", sa.Text(), nullable=False, unique=True),  # names its physical copies
    sa.Column(
        "bucket_id", sa.Integer(), sa.ForeignKey(buckets.c.id, ondelete="CASCADE"), nullable=False
    ),
    sa.Column("key", Key, nullable=False),
    sa.Column("generation", sa.BigInteger(), nullable=True),  # given at commit
    sa.Column("status", sa.Text(), nullable=False),
    sa.Column("owner", sa.Text(), nullable=False),
    sa.Column("size", sa.BigInteger(), nullable=True),
    sa.Column("etag", sa.Text(), nullable=True),
    sa.Column("content_type", sa.Text(), nullable=False),
    sa.Column("metadata", JSONDocument, nullable=False),
    sa.Column("upload_id", sa.Text(), nullable=True, unique=True),  # multipart uploads only
    sa.Column("started", UTCDateTime(), nullable=False),
    sa.Column("last_modified", UTCDateTime(), nullable=True),
    # The verified x-amz-checksum-* of a single-request write: <algorithm>:<base64>.
    sa.Column("checksum", sa.Text(), nullable=True),
    # The promise that a key is listed at most once, whatever the writers do.
    sa.Index(
        "ux_skystore_objects_ready_key",
        "bucket_id",
        "key",
        unique=True,
        sqlite_where=sa.text("status = 'ready'"),
        postgresql_where=sa.text("status = 'ready'"),
    ),
    sa.Index("ix_skystore_objects_status_started", "status", "started"),
)

locators = sa.Table(
    "skystore_locators",
    skystore_metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column(
        "object_id", sa.Integer(), sa.ForeignKey(objects.c.id, ondelete="CASCADE"), nullable=False
    ),
    sa.Column("region", sa.Text(), sa.ForeignKey(regions.c.name), nullable=False),
    sa.Column("physical_bucket", sa.Text(), nullable=False),
    sa.Column("physical_key", sa.Text(), nullable=False),
    # The region's own upload id while a multipart upload writes this copy.
    sa.Column("physical_upload_id", sa.Text(), nullable=True),
    sa.Column("status", sa.Text(), nullable=False),
    sa.Column("is_base", sa.Boolean(), nullable=False),
    sa.Column("created", UTCDateTime(), nullable=False),
    sa.Column("last_access", UTCDateTime(), nullable=False),
    # Where the bytes lie in the region's store (schemas.Locator.layout), if the writer said.
    sa.Column("layout", sa.Text(), nullable=True),
    sa.UniqueConstraint("object_id", "region"),
    sa.Index("ix_skystore_locators_status", "status"),
)

# One row: until when proxies may hold read leases granted by this locator. A locator that
# starts before that time waits it out before acknowledging writes (see locator/leases.py).
lease_horizon = sa.Table(
    "skystore_lease_horizon",
    skystore_metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("until", UTCDateTime(), nullable=False),
)
