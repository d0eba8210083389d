"""Alembic environment of the gateway's tables; run by servicekit.migrate.run_migrations."""

from gateway.tables import gateway_metadata
from servicekit.migrate import run_env

run_env(gateway_metadata)
