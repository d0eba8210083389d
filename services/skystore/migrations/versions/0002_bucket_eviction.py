"""Per-bucket eviction of non-base replicas: kind and TTL (NULL = the locator's settings).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("skystore_buckets") as batch:
        batch.add_column(sa.Column("eviction", sa.Text(), nullable=True))
        batch.add_column(sa.Column("replica_ttl", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("skystore_buckets") as batch:
        batch.drop_column("replica_ttl")
        batch.drop_column("eviction")
