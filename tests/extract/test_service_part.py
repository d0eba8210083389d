"""A service in the local stack: started with its settings, healthy through /readyz, stopped."""

from __future__ import annotations

import textwrap
from pathlib import Path

import httpx
import pytest

from extract.localstack import PARTS, Stack, StackHome
from extract.localstack.parts import service_part
from servicekit.infra import free_port

DEMO_SERVICE = textwrap.dedent(
    """
    from pathlib import Path

    from fastapi import APIRouter
    from pydantic_settings import SettingsConfigDict

    from servicekit.app import create_service_app
    from servicekit.serve import serve
    from servicekit.settings import ServiceSettings


    class DemoSettings(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="EXTRACT_DEMO_", extra="ignore")


    settings = DemoSettings()
    router = APIRouter()


    @router.get("/config")
    async def config() -> dict[str, str]:
        return {
            "database": settings.database_location(),
            "nats": settings.nats_url,
            "jwks": settings.identity_jwks_location(),
        }


    async def jwks_present() -> None:
        if not Path(settings.identity_jwks_location()).is_file():
            raise RuntimeError("no identity JWKS")


    serve(
        lambda: create_service_app(
            name="demo", settings=settings, routers=[router], readiness={"jwks": jwks_present}
        ),
        settings,
    )
    """
)


@pytest.fixture
def demo_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    package = tmp_path / "pkgs" / "demosvc"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(DEMO_SERVICE)
    # The part's process inherits this environment, so it can import the package.
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "pkgs"))
    return "demosvc"


def test_service_part_runs_with_stack_settings(tmp_path: Path, demo_module: str) -> None:
    nats = PARTS[0]
    demo = service_part("demo", 8199, "a demo service", module=demo_module)
    home = StackHome(tmp_path / "home")
    environ = {"EXTRACT_NATS_PORT": str(free_port()), "EXTRACT_DEMO_PORT": str(free_port())}
    stack = Stack(home, parts=(nats, demo), environ=environ)
    stack.up(lambda part, what: None)
    try:
        states = {row.name: row.state for row in stack.status()}
        assert states == {"nats": "healthy", "demo": "healthy"}
        url = f"http://127.0.0.1:{environ['EXTRACT_DEMO_PORT']}"
        config = httpx.get(f"{url}/config", timeout=5).json()
    finally:
        stack.down(lambda part, what: None)
    assert config == {
        "database": f"sqlite+aiosqlite:///{home.data / 'demo'}.sqlite",
        "nats": f"nats://127.0.0.1:{environ['EXTRACT_NATS_PORT']}",
        "jwks": str(home.keys / "identity.jwks.json"),
    }
    assert {row.state for row in stack.status()} == {"stopped"}
