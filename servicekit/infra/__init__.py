"""Launchers for the infrastructure the platform runs on (NATS, SeaweedFS, PostgreSQL).

Used by the local stack (`extract up`) and by the test harness, so both start the same
binaries the same way.
"""

from servicekit.infra.nats import NatsServer
from servicekit.infra.ports import free_port, port_is_free
from servicekit.infra.postgres import PostgresCluster, find_postgres_bindir
from servicekit.infra.process import ManagedProcess, wait_until
from servicekit.infra.seaweed import S3Endpoint, SeaweedRegion

__all__ = [
    "ManagedProcess",
    "NatsServer",
    "PostgresCluster",
    "S3Endpoint",
    "SeaweedRegion",
    "find_postgres_bindir",
    "free_port",
    "port_is_free",
    "wait_until",
]
