"""catalog search index: resources by where they are and their state, newest first.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

PostgreSQL only. "This infrastructure service's resources in this state, newest first" (with
further terms, on `bytes` say) is the catalog's most common search: which data is ready where.
Through 0002's one-attribute indexes, its exact count read every resource of the service from
the heap (~10k wide rows of 100k) to test its state, and its page walked the `timestamp` index
across every service. With both equalities as keys, followed by the `timestamp:desc` order,
the count reads only the resources of that service in that state, and the page reads them in
order, stopping at its end.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_catalog_resources_service_state"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"CREATE INDEX {INDEX} ON catalog_resources (collection, hot_infrastructure_service_s,"
        " hot_state_s, hot_timestamp_n DESC NULLS LAST, hot_timestamp_s DESC NULLS LAST, id)"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX {INDEX}")
