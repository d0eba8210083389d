"""The catalog's configuration: EXTRACT_CATALOG_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings, extract_home

__all__ = ["CatalogSettings"]


class CatalogSettings(ServiceSettings):
    """Every field reads `EXTRACT_CATALOG_<FIELD>`; see ServiceSettings for the shared ones."""

    model_config = SettingsConfigDict(env_prefix="EXTRACT_CATALOG_", extra="ignore")

    port: int = Field(8101, description="port to listen on")
    max_body_bytes: int = Field(
        1024 * 1024, description="largest request body accepted; larger ones get 413"
    )
    events_key: str = Field(
        "", description="ES256 key (PEM) signing model events; default keys/catalog-events.key.pem"
    )
    webhook_timeout: float = Field(5.0, description="seconds a webhook endpoint has to answer")
    webhook_max_attempts: int = Field(12, description="deliveries of one webhook event, at most")
    webhook_retry_delay: float = Field(
        2.0, description="seconds before the first redelivery; doubles each time, up to 5 min"
    )
    webhook_allow_private_networks: bool = Field(
        False, description="deliver webhooks to loopback/private addresses (development only)"
    )
    s3_endpoint: str = Field("", description="default S3 service URL; empty = no default")
    s3_access_key: str = Field("", description="access key of the default S3 service")
    s3_secret_key: str = Field("", description="secret key of the default S3 service")
    s3_credentials: str = Field(
        "",
        description="where the default S3 service's key pair is, when the keys above are not"
        " set: env:PREFIX or file:/path#profile (an ini like ~/.aws/credentials)",
    )
    s3_region: str = Field("", description="region name of the default S3 service")
    s3_bucket: str = Field("extract-data", description="bucket of data-objects naming none")
    secrets_key: str = Field(
        "",
        description="Fernet key file encrypting stored secrets; default keys/catalog-secrets.key",
    )
    check_value_algorithm: Literal["sha256", "sha512", "blake3"] = Field(
        "sha256", description="algorithm of data-object check values (<object>.<algorithm>asc)"
    )
    presign_ttl: int = Field(3600, ge=1, description="seconds a presigned URL lives by default")
    presign_max_ttl: int = Field(
        24 * 3600, ge=1, le=7 * 24 * 3600, description="longest `ttl` a caller may ask for"
    )

    def secrets_key_location(self) -> Path:
        if self.secrets_key:
            return Path(self.secrets_key)
        return extract_home() / "keys" / "catalog-secrets.key"

    def events_key_location(self) -> Path:
        if self.events_key:
            return Path(self.events_key)
        return extract_home() / "keys" / "catalog-events.key.pem"
