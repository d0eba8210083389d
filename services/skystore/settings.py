"""SkyStore's configuration: EXTRACT_SKYSTORE_* (locator) and EXTRACT_SKYSTORE_PROXY_* (proxies)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings, extract_home
from services.skystore.schemas import Eviction

__all__ = ["LocatorSettings", "ProxySettings", "SeaweedAccess", "internal_token_location"]


def internal_token_location(configured: str) -> Path:
    """The file holding the bearer token proxies present to the locator."""
    return Path(configured) if configured else extract_home() / "keys" / "skystore-internal.token"


class LocatorSettings(ServiceSettings):
    """Every field reads `EXTRACT_SKYSTORE_<FIELD>`; see ServiceSettings for the shared ones."""

    model_config = SettingsConfigDict(env_prefix="EXTRACT_SKYSTORE_", extra="ignore")

    port: int = Field(8102, description="port to listen on")
    regions_file: str = Field(
        "",
        description="JSON file of regions (name, endpoint, credentials, storage_cost) and links "
        "(src, dst, latency_ms, egress_cost) registered at start-up; empty = none",
    )
    default_policy: str = Field("write_local", description="placement policy of new buckets")
    pending_timeout: float = Field(
        3600.0, description="seconds after which an unfinished upload is rolled back"
    )
    multipart_timeout: float = Field(
        7 * 24 * 3600.0, description="seconds after which an unfinished multipart is rolled back"
    )
    reaper_interval: float = Field(60.0, description="seconds between stale-operation sweeps")
    secrets_key: str = Field(
        "",
        description="Fernet key file encrypting access-key secrets; default keys/skystore.fernet",
    )
    internal_token: str = Field(
        "", description="file of the proxies' bearer token; default keys/skystore-internal.token"
    )
    admin_credentials: str = Field(
        "",
        description="if set, an ini file (like ~/.aws/credentials) where the locator writes a "
        "key pair for admin_principal on first start; empty = none",
    )
    admin_principal: str = Field("user/admin", description="owner of the admin key pair")
    eviction: Eviction = Field(
        "none",
        description="default eviction of evictable non-base replicas (copy_on_read caches; "
        "never the base copy, nor replicate_all/push copies): fixed_ttl (replica_ttl seconds "
        "unread) or t_even (break-even: egress cost / storage cost of the replica's region); "
        "a bucket may set its own",
    )
    replica_ttl: float = Field(24 * 3600.0, description="seconds an unread replica is kept")
    push_consumer: str = Field(
        "skystore-push",
        description="durable NATS consumer of skystore.object.created that drives push "
        "replication; locators sharing one database share it, other deployments on the same "
        "NATS need their own name",
    )
    push_workers: int = Field(2, ge=1, description="concurrent copies of the push worker")
    lease_seconds: float = Field(
        10.0,
        ge=0,
        description="how long a proxy may answer HEAD and GET from a cached object record; a "
        "write waits until every holder has dropped the old record (revoked over nats_url, or "
        "the lease runs out); 0 or no nats_url = proxies cache no object records. Leases live "
        "in one locator process: several locators on one database need 0",
    )
    lease_revoke_timeout: float = Field(
        1.0, gt=0, description="seconds a write waits for a lease holder to answer a revocation"
    )

    def secrets_key_location(self) -> Path:
        return (
            Path(self.secrets_key)
            if self.secrets_key
            else extract_home() / "keys" / "skystore.fernet"
        )


class SeaweedAccess(BaseModel):
    """Where a proxy reaches one SeaweedFS region's filer and master (plain HTTP)."""

    filer: str = Field(description="the filer's base URL, e.g. http://127.0.0.1:8888")
    master: str = Field(description="the master's base URL, e.g. http://127.0.0.1:9333")
    buckets_folder: str = Field("/buckets", description="the filer folder holding S3 buckets")


class ProxySettings(ServiceSettings):
    """Every field reads `EXTRACT_SKYSTORE_PROXY_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="EXTRACT_SKYSTORE_PROXY_", extra="ignore")

    port: int = Field(8110, description="port to listen on")
    region: str = Field("local:edge", description="the region this proxy serves")
    locator_url: str = Field("http://127.0.0.1:8102", description="the locator's base URL")
    internal_token: str = Field(
        "",
        description="file of the locator bearer token; default keys/skystore-internal.token",
    )
    key_cache_seconds: float = Field(30.0, description="how long an access key stays cached")
    presign_max_seconds: int = Field(7 * 24 * 3600, description="longest presigned URL validity")
    clock_skew_seconds: int = Field(900, description="largest accepted x-amz-date skew")
    relay_min_bytes: int = Field(
        1024 * 1024,
        ge=0,
        description="GET and PUT bodies at least this long go between a plain-HTTP client's "
        "socket and a plain-HTTP region's past the ASGI stack (GET: splice, Linux); 0 = never",
    )
    relay_timeout: float = Field(
        60.0, gt=0, description="longest wait for either side of a relayed body, seconds"
    )
    seaweedfs: dict[str, SeaweedAccess] = Field(
        default_factory=dict,
        description="regions (by name) whose SeaweedFS filer, master and volume servers this "
        "proxy may reach over plain HTTP on a trusted network: their relayed GETs read the "
        'chunks from the volume servers; JSON, e.g. {"local:edge": {"filer": '
        '"http://127.0.0.1:8888", "master": "http://127.0.0.1:9333"}}',
    )
    object_cache_entries: int = Field(
        100_000,
        ge=0,
        description="object records kept under the locator's read leases (needs nats_url, on "
        "which the locator revokes them); 0 = every HEAD and GET asks the locator",
    )
