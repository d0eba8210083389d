"""`extract up` runs the locator and one proxy per local region; `extract s3-key` mints keys."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from extract.localstack import PARTS
from servicekit.infra import free_port
from servicekit.infra.seaweed import SeaweedPorts

EXTRACT = [sys.executable, "-m", "extract"]


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EXTRACT, *args], env=env, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """One local stack for the module's tests (each `extract up` costs tens of seconds)."""
    home = tmp_path_factory.mktemp("stack") / "home"
    env = {**os.environ, "EXTRACT_HOME": str(home)}
    for part in PARTS:
        seaweed = part.name in ("s3-edge", "s3-cloud")
        env[part.port_variable] = str(SeaweedPorts.free_base() if seaweed else free_port())
    started = _run(["up"], env)
    try:
        assert started.returncode == 0, started.stderr
        yield home, env
    finally:
        _run(["down"], env)


def _client(url: str, key_id: str, secret: str):
    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
    )


def test_admin_credentials_and_s3_key_work_on_both_proxies(
    local_stack: tuple[Path, dict[str, str]],
) -> None:
    home, env = local_stack
    edge = f"http://127.0.0.1:{env['EXTRACT_SKYSTORE_EDGE_PORT']}"
    cloud = f"http://127.0.0.1:{env['EXTRACT_SKYSTORE_CLOUD_PORT']}"
    ini = configparser.ConfigParser()
    ini.read(home / "s3-credentials")
    assert oct((home / "s3-credentials").stat().st_mode & 0o777) == "0o600"
    admin = _client(
        edge, ini["default"]["aws_access_key_id"], ini["default"]["aws_secret_access_key"]
    )
    admin.create_bucket(Bucket="admin-bucket")

    minted = _run(["s3-key", "--principal", "user/alice"], env)
    assert minted.returncode == 0, minted.stderr
    lines = dict(line.split("=", 1) for line in minted.stdout.splitlines())
    assert set(lines) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    alice_edge = _client(edge, lines["AWS_ACCESS_KEY_ID"], lines["AWS_SECRET_ACCESS_KEY"])
    alice_cloud = _client(cloud, lines["AWS_ACCESS_KEY_ID"], lines["AWS_SECRET_ACCESS_KEY"])
    alice_edge.create_bucket(Bucket="alice-data")
    alice_edge.put_object(Bucket="alice-data", Key="x", Body=b"from the edge")
    assert alice_cloud.get_object(Bucket="alice-data", Key="x")["Body"].read() == b"from the edge"
    assert [b["Name"] for b in alice_cloud.list_buckets()["Buckets"]] == ["alice-data"]


def test_s3_key_refuses_a_bad_principal(local_stack: tuple[Path, dict[str, str]]) -> None:
    _, env = local_stack
    refused = _run(["s3-key", "--principal", "alice"], env)
    assert refused.returncode == 2
    assert "principal" in refused.stderr
