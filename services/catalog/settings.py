"""The catalog's configuration: EXTRACT_CATALOG_* environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings

__all__ = ["CatalogSettings"]


class CatalogSettings(ServiceSettings):
    """Every field reads `EXTRACT_CATALOG_<FIELD>`; see ServiceSettings for the shared ones."""

    model_config = SettingsConfigDict(env_prefix="EXTRACT_CATALOG_", extra="ignore")

    port: int = Field(8101, description="port to listen on")
    max_body_bytes: int = Field(
        1024 * 1024, description="largest request body accepted; larger ones get 413"
    )
