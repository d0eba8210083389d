"""gateway credentials of subtype s3-key: a subtype, the SkyStore key id, no secret hash.

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
    with op.batch_alter_table("gateway_credentials") as batch:
        batch.add_column(sa.Column("subtype", sa.Text(), nullable=False, server_default="api-key"))
        batch.add_column(sa.Column("access_key", sa.Text(), nullable=True))
        batch.alter_column("secret_hash", existing_type=sa.Text(), nullable=True)
        batch.create_unique_constraint("uq_gateway_credentials_access_key", ["access_key"])


def downgrade() -> None:
    op.execute("DELETE FROM gateway_credentials WHERE subtype <> 'api-key'")
    with op.batch_alter_table("gateway_credentials") as batch:
        batch.drop_constraint("uq_gateway_credentials_access_key", type_="unique")
        batch.alter_column("secret_hash", existing_type=sa.Text(), nullable=False)
        batch.drop_column("access_key")
        batch.drop_column("subtype")
