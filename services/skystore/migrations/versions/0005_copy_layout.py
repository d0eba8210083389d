"""Where a copy's bytes lie inside its region's store (its SeaweedFS chunks), as the proxy that
wrote it found them: a first read needs no filer lookup.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("skystore_locators") as batch:
        batch.add_column(sa.Column("layout", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("skystore_locators") as batch:
        batch.drop_column("layout")
