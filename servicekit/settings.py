"""Settings base: every service subclasses it and sets its env prefix (EXTRACT_<SERVICE>_)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def extract_home() -> Path:
    """Where the local stack keeps its state: $EXTRACT_HOME, else ./.extract."""
    return Path(os.environ.get("EXTRACT_HOME") or ".extract").resolve()


class ServiceSettings(BaseSettings):
    """What every service is configured with. Subclasses add their own fields.

    A subclass sets ``model_config = SettingsConfigDict(env_prefix="EXTRACT_CATALOG_")``;
    every field then reads ``EXTRACT_CATALOG_<FIELD>`` from the environment.
    """

    model_config = SettingsConfigDict(env_prefix="EXTRACT_SERVICE_", extra="ignore")

    env: Literal["development", "production"] = Field(
        "development", description="production refuses self-signed or weak TLS certificates"
    )
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8100, description="port to listen on")
    log_level: str = Field("info", description="python logging level name")
    database_url: str = Field(
        "",
        description="SQLAlchemy async URL: postgresql+asyncpg://… or sqlite+aiosqlite:///…; "
        "empty = the SQLite file $EXTRACT_HOME/data/<service>.sqlite",
    )
    database_pool_size: int = Field(
        10,
        ge=1,
        description="database connections kept open once used; as many again open for a burst",
    )
    nats_url: str = Field("nats://127.0.0.1:14222", description="NATS server with JetStream")
    identity_jwks: str = Field(
        "",
        description="path or URL of the JWKS whose ES256 keys sign identity tokens; "
        "empty = $EXTRACT_HOME/keys/identity.jwks.json",
    )
    identity_issuer: str = Field("extract-gateway", description="expected `iss` of tokens")
    tls_cert: str = Field("", description="PEM certificate chain; empty = plain HTTP")
    tls_key: str = Field("", description="PEM private key for tls_cert")
    tls_ca: str = Field("", description="CA bundle that client certificates must chain to")

    @classmethod
    def service_name(cls) -> str:
        """`catalog` for the prefix EXTRACT_CATALOG_."""
        prefix = str(cls.model_config.get("env_prefix", ""))
        return prefix.removeprefix("EXTRACT_").rstrip("_").lower() or "service"

    def database_location(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{extract_home() / 'data' / self.service_name()}.sqlite"

    def identity_jwks_location(self) -> str:
        return self.identity_jwks or str(extract_home() / "keys" / "identity.jwks.json")
