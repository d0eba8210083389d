"""Alembic environment of SkyStore's locator tables; run by servicekit.migrate.run_migrations."""

from servicekit.migrate import run_env
from services.skystore.tables import skystore_metadata

run_env(skystore_metadata)
