"""Alembic environment of the catalog's tables; run by servicekit.migrate.run_migrations."""

from servicekit.migrate import run_env
from services.catalog.tables import catalog_metadata

run_env(catalog_metadata)
