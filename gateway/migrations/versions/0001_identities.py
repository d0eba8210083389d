"""gateway identities: users, API-key credentials, sessions, device keys and used nonces.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from servicekit.db import UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gateway_users",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("created", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "gateway_credentials",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("claims", sa.JSON(), nullable=False),
        sa.Column("secret_hash", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("expiry", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_gateway_credentials_owner", "gateway_credentials", ["owner"])
    op.create_table(
        "gateway_sessions",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("token_hash", sa.Text(), nullable=False, unique=True),
        sa.Column("principal", sa.Text(), nullable=False),
        sa.Column("claims", sa.JSON(), nullable=False),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("identifier", sa.Text(), nullable=False),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("expiry", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "gateway_devices",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("jwk", sa.JSON(), nullable=False),
        sa.Column("created", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "gateway_nonces",
        sa.Column("device", sa.Text(), primary_key=True),
        sa.Column("nonce", sa.Text(), primary_key=True),
        sa.Column("expires", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_gateway_nonces_expires", "gateway_nonces", ["expires"])


def downgrade() -> None:
    for table in (
        "gateway_nonces",
        "gateway_devices",
        "gateway_sessions",
        "gateway_credentials",
        "gateway_users",
    ):
        op.drop_table(table)
