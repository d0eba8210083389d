"""SkyStore's locator: regions, access keys, logical/physical buckets, objects and replicas.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# Keys compare as UTF-8 bytes on both databases.
_KEY = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "skystore_access_keys",
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("principal", sa.Text(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
    )
    op.create_table(
        "skystore_regions",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("credentials", sa.Text(), nullable=False),
        sa.Column("storage_cost", sa.Float(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "skystore_buckets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("acl", _JSON, nullable=False),
        sa.Column("policy", sa.Text(), nullable=False),
        sa.Column("base_region", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["base_region"],
            ["skystore_regions.name"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "skystore_region_links",
        sa.Column("src", sa.Text(), nullable=False),
        sa.Column("dst", sa.Text(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("egress_cost", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["dst"], ["skystore_regions.name"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["src"], ["skystore_regions.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("src", "dst"),
    )
    op.create_table(
        "skystore_key_heads",
        sa.Column("bucket_id", sa.Integer(), nullable=False),
        sa.Column("key", _KEY, nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["bucket_id"], ["skystore_buckets.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("bucket_id", "key"),
    )
    op.create_table(
        "skystore_objects",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("uid", sa.Text(), nullable=False),
        sa.Column("bucket_id", sa.Integer(), nullable=False),
        sa.Column("key", _KEY, nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("etag", sa.Text(), nullable=True),
        sa.Column("content_type", sa.Text(), nullable=False),
        sa.Column("metadata", _JSON, nullable=False),
        sa.Column("upload_id", sa.Text(), nullable=True),
        sa.Column("started", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_modified", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["bucket_id"], ["skystore_buckets.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("uid"),
        sa.UniqueConstraint("upload_id"),
    )
    op.create_index(
        "ix_skystore_objects_status_started",
        "skystore_objects",
        ["status", "started"],
        unique=False,
    )
    op.create_index(
        "ux_skystore_objects_ready_key",
        "skystore_objects",
        ["bucket_id", "key"],
        unique=True,
        sqlite_where=sa.text("status = 'ready'"),
        postgresql_where=sa.text("status = 'ready'"),
    )
    op.create_table(
        "skystore_physical_buckets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("bucket_id", sa.Integer(), nullable=False),
        sa.Column("region", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["bucket_id"], ["skystore_buckets.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["region"],
            ["skystore_regions.name"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("bucket_id", "region"),
        sa.UniqueConstraint("region", "name"),
    )
    op.create_table(
        "skystore_locators",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("object_id", sa.Integer(), nullable=False),
        sa.Column("region", sa.Text(), nullable=False),
        sa.Column("physical_bucket", sa.Text(), nullable=False),
        sa.Column("physical_key", sa.Text(), nullable=False),
        sa.Column("physical_upload_id", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("is_base", sa.Boolean(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_access", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["object_id"], ["skystore_objects.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["region"],
            ["skystore_regions.name"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("object_id", "region"),
    )
    op.create_index("ix_skystore_locators_status", "skystore_locators", ["status"], unique=False)


def downgrade() -> None:
    for table in (
        "skystore_locators",
        "skystore_physical_buckets",
        "skystore_objects",
        "skystore_key_heads",
        "skystore_region_links",
        "skystore_buckets",
        "skystore_regions",
        "skystore_access_keys",
    ):
        op.drop_table(table)
