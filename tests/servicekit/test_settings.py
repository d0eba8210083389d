"""ServiceSettings: env prefixes per service and the documented defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings


class CatalogSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EXTRACT_CATALOG_", extra="ignore")


def test_fields_read_the_service_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXTRACT_CATALOG_PORT", "8101")
    monkeypatch.setenv("EXTRACT_SERVICE_PORT", "9999")
    assert CatalogSettings().port == 8101


def test_default_database_is_a_file_named_after_the_service(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EXTRACT_HOME", str(tmp_path))
    location = CatalogSettings().database_location()
    assert location == f"sqlite+aiosqlite:///{tmp_path}/data/catalog.sqlite"


def test_explicit_database_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXTRACT_CATALOG_DATABASE_URL", "postgresql+asyncpg://db/catalog")
    assert CatalogSettings().database_location() == "postgresql+asyncpg://db/catalog"


def test_default_jwks_lives_in_the_stack_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EXTRACT_HOME", str(tmp_path))
    assert CatalogSettings().identity_jwks_location() == str(
        tmp_path / "keys" / "identity.jwks.json"
    )


def test_unknown_env_mode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXTRACT_CATALOG_ENV", "staging")
    with pytest.raises(ValidationError, match="production"):
        CatalogSettings()


def test_port_must_be_a_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXTRACT_CATALOG_PORT", "eighty")
    with pytest.raises(ValidationError, match="port"):
        CatalogSettings()
