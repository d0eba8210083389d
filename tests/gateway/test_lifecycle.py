"""The gateway app's lifecycle."""

from __future__ import annotations

import gc
from pathlib import Path

from gateway.app import create_app
from gateway.settings import GatewaySettings
from servicekit.testing import app_client


async def test_the_heap_built_at_start_is_out_of_the_collectors_sight_while_serving(
    tmp_path: Path, identity_key_file: Path, tls_files: tuple[Path, Path, Path]
) -> None:
    _, cert, key = tls_files
    settings = GatewaySettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gateway.sqlite'}",
        identity_key=str(identity_key_file),
        signing_key=str(tmp_path / "gateway-sign.key.pem"),
        tls_cert=str(cert),
        tls_key=str(key),
        **{f"{name}_url": "" for name in GatewaySettings().upstream_urls()},
        nats_url="",
    )
    gc.unfreeze()
    async with app_client(create_app(settings)) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
