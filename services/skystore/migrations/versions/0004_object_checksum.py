"""The verified additional checksum (x-amz-checksum-*) of an object written in one request.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("skystore_objects") as batch:
        batch.add_column(sa.Column("checksum", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("skystore_objects") as batch:
        batch.drop_column("checksum")
