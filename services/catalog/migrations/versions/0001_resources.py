"""catalog_resources: every catalog resource as a JSON document, with its viewers.

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


def upgrade() -> None:
    op.create_table(
        "catalog_resources",
        sa.Column(
            "id", sa.Text().with_variant(sa.Text(collation="C"), "postgresql"), nullable=False
        ),
        sa.Column("collection", sa.Text(), nullable=False),
        sa.Column("document", _JSON, nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("viewers", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_catalog_resources"),
    )
    op.create_index(
        "ix_catalog_resources_collection_created", "catalog_resources", ["collection", "created"]
    )
    op.create_index(
        "ix_catalog_resources_collection_updated", "catalog_resources", ["collection", "updated"]
    )
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(
            "ix_catalog_resources_document",
            "catalog_resources",
            ["document"],
            postgresql_using="gin",
            postgresql_ops={"document": "jsonb_path_ops"},
        )
        op.create_index(
            "ix_catalog_resources_viewers",
            "catalog_resources",
            ["viewers"],
            postgresql_using="gin",
        )


def downgrade() -> None:
    op.drop_table("catalog_resources")
