"""The catalog's database table: every resource as its JSON document, with who may see it."""

from __future__ import annotations

import sqlalchemy as sa

from servicekit.db import JSONDocument, UTCDateTime

__all__ = ["catalog_metadata", "catalog_resources"]

catalog_metadata = sa.MetaData()
"""The catalog's own tables, created by the migrations in services/catalog/migrations."""

catalog_resources = sa.Table(
    "catalog_resources",
    catalog_metadata,
    # `data-record/<uuid>`: the collection name, a slash, a UUID. Collation "C" on PostgreSQL
    # sorts ids by code point as SQLite does, so pages come out the same on both.
    sa.Column("id", sa.Text().with_variant(sa.Text(collation="C"), "postgresql"), primary_key=True),
    sa.Column("collection", sa.Text(), nullable=False),
    # The whole resource as the API returns it, `acl` included; filters read it.
    sa.Column("document", JSONDocument, nullable=False),
    sa.Column("created", UTCDateTime(), nullable=False),
    sa.Column("updated", UTCDateTime(), nullable=False),
    # A JSON array, sorted: the principals holding view-meta, recomputed on every write, so a
    # search checks visibility without evaluating the ACL's rights lattice in SQL.
    sa.Column("viewers", JSONDocument, nullable=False),
    sa.Index("ix_catalog_resources_collection_created", "collection", "created"),
    sa.Index("ix_catalog_resources_collection_updated", "collection", "updated"),
)
