"""`extract up / status / token / down` on real binaries, in a private EXTRACT_HOME."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest

from extract.localstack import PARTS, Stack, StackHome
from servicekit.credential_refs import resolve_credentials
from servicekit.infra import free_port, port_is_free
from servicekit.infra.process import pid_alive, read_pid
from servicekit.infra.seaweed import SeaweedPorts
from servicekit.security import JWKSet, verify_identity_token

EXTRACT = [sys.executable, "-m", "extract"]


def stack_env(home: Path) -> dict[str, str]:
    env = {"EXTRACT_HOME": str(home)}
    for part in PARTS:
        seaweed = part.name.startswith("s3-")
        env[part.port_variable] = str(SeaweedPorts.free_base() if seaweed else free_port())
    return {**os.environ, **env}


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EXTRACT, *args], env=env, capture_output=True, text=True, timeout=180)


@pytest.fixture
def running_stack(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    home = tmp_path / "home"
    env = stack_env(home)
    started = run(["up"], env)
    try:
        assert started.returncode == 0, started.stderr
        yield home, env
    finally:
        run(["down"], env)


def test_up_status_down_leaves_no_process(running_stack: tuple[Path, dict[str, str]]) -> None:
    home, env = running_stack
    status = run(["status"], env)
    assert status.returncode == 0, status.stdout + status.stderr
    for part in PARTS:
        assert part.name in status.stdout
    assert status.stdout.count("healthy") == len(PARTS)
    pids = [read_pid(home / "run" / f"{part.name}.pid") for part in PARTS]
    assert all(pid is not None and pid_alive(pid) for pid in pids)
    endpoints = json.loads((home / "endpoints.json").read_text())
    assert endpoints["nats"] == f"nats://127.0.0.1:{env['EXTRACT_NATS_PORT']}"

    stopped = run(["down"], env)
    assert stopped.returncode == 0, stopped.stderr
    assert not any(pid_alive(pid) for pid in pids if pid is not None)
    assert port_is_free(int(env["EXTRACT_NATS_PORT"]))
    after = run(["status"], env)
    assert after.returncode == 1
    assert after.stdout.count("stopped") == len(PARTS)


def test_up_twice_keeps_the_running_parts(running_stack: tuple[Path, dict[str, str]]) -> None:
    home, env = running_stack
    before = read_pid(home / "run" / "nats.pid")
    again = run(["up"], env)
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stderr
    assert read_pid(home / "run" / "nats.pid") == before


def test_token_verifies_against_the_stack_jwks(tmp_path: Path) -> None:
    env = {**os.environ, "EXTRACT_HOME": str(tmp_path)}
    minted = run(["token", "--principal", "user/alice", "--claim", "group/science"], env)
    assert minted.returncode == 0, minted.stderr
    jwks = JWKSet.from_json((tmp_path / "keys" / "identity.jwks.json").read_text())
    identity = verify_identity_token(minted.stdout.strip(), jwks, issuer="extract-gateway")
    assert identity.principal == "user/alice"
    assert {"group/science", "group/extract-anon"} <= identity.claims


def test_token_refuses_a_malformed_principal(tmp_path: Path) -> None:
    env = {**os.environ, "EXTRACT_HOME": str(tmp_path)}
    refused = run(["token", "--principal", "alice"], env)
    assert refused.returncode == 2
    assert "alice" in refused.stderr


def test_taken_port_is_named_with_its_variable(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "home")
    port = int(env["EXTRACT_NATS_PORT"])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        refused = run(["up"], env)
    assert refused.returncode == 2
    assert f"port {port}" in refused.stderr
    assert "EXTRACT_NATS_PORT" in refused.stderr
    # Nothing was left running by the refused start.
    stack = Stack(StackHome(tmp_path / "home"), environ=env)
    assert all(stack.running(part.name) is None for part in PARTS)


def test_bad_port_variable_is_refused(tmp_path: Path) -> None:
    env = {**stack_env(tmp_path / "home"), "EXTRACT_NATS_PORT": "forty"}
    refused = run(["up"], env)
    assert refused.returncode == 2
    assert "EXTRACT_NATS_PORT='forty'" in refused.stderr


def test_data_objects_of_the_stack_live_in_skystore(
    running_stack: tuple[Path, dict[str, str]],
) -> None:
    """The catalog's default S3 service is SkyStore's edge proxy: an object uploaded through a
    data-object is in the global namespace, readable through the cloud proxy and through the
    gateway's TLS S3 port (SigV4 intact)."""
    home, env = running_stack
    token = run(["token", "--principal", "user/alice"], env).stdout.strip()
    catalog = f"http://127.0.0.1:{env['EXTRACT_CATALOG_PORT']}/api"
    content = b"radio spectrum " * 1000
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        template = {"href": "data-object-template/generic", "object": "runs/spectrum.bin"}
        added = client.post(f"{catalog}/data-object", json={"template": template})
        assert added.status_code == 201, added.text
        resource = f"{catalog}/{added.json()['resource-id']}"
        upload = client.post(f"{resource}/upload")
        assert upload.status_code == 200, upload.text
        assert upload.json()["uri"].startswith(
            f"http://127.0.0.1:{env['EXTRACT_SKYSTORE_EDGE_PORT']}/"
        )
        assert httpx.put(upload.json()["uri"], content=content).status_code == 200
        ready = client.post(f"{resource}/ready")
        assert ready.status_code == 200, ready.text
        document = client.get(resource).json()
    assert document["sha256"] == hashlib.sha256(content).hexdigest()
    access, secret = resolve_credentials(f"file:{home / 's3-credentials'}")
    cloud = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{env['EXTRACT_SKYSTORE_CLOUD_PORT']}",
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name="us-east-1",
    )
    read = cloud.get_object(Bucket=document["bucket"], Key=document["object"])
    assert read["Body"].read() == content
    through_gateway = boto3.client(
        "s3",
        endpoint_url=f"https://localhost:{int(env['EXTRACT_GATEWAY_PORT']) + 1}",
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        verify=str(home / "tls" / "ca.pem"),
    )
    ranged = through_gateway.get_object(
        Bucket=document["bucket"], Key=document["object"], Range="bytes=0-4"
    )
    assert ranged["Body"].read() == content[:5]
