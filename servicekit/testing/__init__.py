"""The test harness: real PostgreSQL, NATS JetStream and S3 for every test session.

Loaded by pytest through the `pytest11` entry point (`servicekit.testing.plugin`).
"""

from servicekit.testing.apps import ServiceProcess, app_client
from servicekit.testing.polling import eventually
from servicekit.testing.sources import run_sync

__all__ = ["ServiceProcess", "app_client", "eventually", "run_sync"]
