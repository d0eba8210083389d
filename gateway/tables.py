"""The gateway's own tables: users, credentials (API and S3 keys), sessions, device keys, nonces."""

from __future__ import annotations

import sqlalchemy as sa

from servicekit.db import UTCDateTime

__all__ = [
    "credentials",
    "devices",
    "gateway_metadata",
    "nonces",
    "sessions",
    "users",
]

gateway_metadata = sa.MetaData()

users = sa.Table(
    "gateway_users",
    gateway_metadata,
    sa.Column("id", sa.Text, primary_key=True),  # user/<name>
    sa.Column("password_hash", sa.Text, nullable=True),
    sa.Column("groups", sa.JSON, nullable=False),  # ["group/<name>", …]
    sa.Column("created", UTCDateTime, nullable=False),
)

credentials = sa.Table(
    "gateway_credentials",
    gateway_metadata,
    sa.Column("id", sa.Text, primary_key=True),  # credential/<uuid>
    sa.Column("owner", sa.Text, nullable=False),  # the principal the key logs in as
    sa.Column("claims", sa.JSON, nullable=False),
    sa.Column("secret_hash", sa.Text, nullable=True),  # api-key only
    sa.Column("subtype", sa.Text, nullable=False, server_default="api-key"),  # or s3-key
    sa.Column("access_key", sa.Text, nullable=True),  # s3-key: the SkyStore key id
    sa.Column("name", sa.Text, nullable=True),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.Column("expiry", UTCDateTime, nullable=True),
    sa.UniqueConstraint("access_key", name="uq_gateway_credentials_access_key"),
)

sessions = sa.Table(
    "gateway_sessions",
    gateway_metadata,
    sa.Column("id", sa.Text, primary_key=True),  # session/<uuid>
    sa.Column("token_hash", sa.Text, nullable=False, unique=True),
    sa.Column("principal", sa.Text, nullable=False),
    sa.Column("claims", sa.JSON, nullable=False),
    sa.Column("method", sa.Text, nullable=False),  # api-key | password
    sa.Column("identifier", sa.Text, nullable=False),  # the key id or user name logged in with
    sa.Column("created", UTCDateTime, nullable=False),
    sa.Column("expiry", UTCDateTime, nullable=False),
)

devices = sa.Table(
    "gateway_devices",
    gateway_metadata,
    sa.Column("id", sa.Text, primary_key=True),  # device/<uuid>, the key id of its signatures
    sa.Column("owner", sa.Text, nullable=False),
    sa.Column("jwk", sa.JSON, nullable=False),  # EC P-256 public key
    sa.Column("created", UTCDateTime, nullable=False),
)

nonces = sa.Table(
    "gateway_nonces",
    gateway_metadata,
    sa.Column("device", sa.Text, primary_key=True),
    sa.Column("nonce", sa.Text, primary_key=True),
    sa.Column("expires", UTCDateTime, nullable=False, index=True),
)
