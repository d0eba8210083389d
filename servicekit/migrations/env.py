"""Alembic environment of servicekit's own tables (outbox, inbox)."""

from servicekit import inbox, outbox  # noqa: F401  (importing them registers their tables)
from servicekit.db import servicekit_metadata
from servicekit.migrate import run_env

run_env(servicekit_metadata)
