"""The SDK (extract.client) and the `extract search / put / get` commands against a whole local
stack: the gateway in front, the catalog behind it, data-object bytes in SkyStore."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError
from stack_runner import run

from extract.client import ApiError, Client, IntegrityError
from servicekit.credential_refs import resolve_credentials

Stack = tuple[Path, dict[str, str]]
CONTENT = os.urandom(3 * 1024 * 1024 + 17)  # more than one transfer chunk


def _client(stack: Stack) -> Client:
    home, env = stack
    return Client(
        f"https://localhost:{env['EXTRACT_GATEWAY_PORT']}", ca_file=home / "tls" / "ca.pem"
    )


@pytest.fixture(scope="module")
def api_key(shared_stack: Stack) -> tuple[str, str]:
    home, _ = shared_stack
    password = (home / "secrets" / "gateway-admin-password").read_text().strip()
    with _client(shared_stack) as admin:
        admin.login_password("admin", password)
        return admin.create_api_key(name="sdk tests")


@pytest.fixture
def client(shared_stack: Stack, api_key: tuple[str, str]) -> Client:
    sdk = _client(shared_stack)
    sdk.login_api_key(*api_key)
    yield sdk
    sdk.close()


def _s3(stack: Stack, url: str) -> boto3.client:
    home, _ = stack
    access, secret = resolve_credentials(f"file:{home / 's3-credentials'}")
    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        verify=str(home / "tls" / "ca.pem"),
    )


def test_records_are_added_searched_edited_and_deleted(client: Client) -> None:
    service = {"infrastructure-service": "infrastructure-service/s3-edge"}
    ids = [client.add("data-record", {**service, "name": f"run {n}", "bytes": n}) for n in (1, 2)]
    found = client.search(
        "data-record", filter=["bytes>=1", "name^='run'"], orderby="bytes:desc", select="name"
    )
    assert [r["name"] for r in found["resources"]][:2] == ["run 2", "run 1"]
    client.edit(ids[0], {"description": "edited"})
    assert client.get(ids[0])["description"] == "edited"
    client.delete(ids[0])
    with pytest.raises(ApiError) as missing:
        client.get(ids[0])
    assert missing.value.status == 404
    with pytest.raises(ApiError) as invalid:
        client.search("data-record", filter="bytes>")
    assert invalid.value.status == 400 and "Invalid CIMI filter" in invalid.value.message


def test_a_wrong_secret_is_refused(shared_stack: Stack, api_key: tuple[str, str]) -> None:
    with _client(shared_stack) as sdk, pytest.raises(ApiError) as refused:
        sdk.login_api_key(api_key[0], "not-the-secret")
    assert refused.value.status in (401, 403)


def test_upload_and_download_stream_with_progress_and_check_the_digest(
    client: Client, shared_stack: Stack, tmp_path: Path
) -> None:
    source = tmp_path / "spectrum.bin"
    source.write_bytes(CONTENT)
    moved: list[int] = []
    resource_id = client.upload(source, object_key="sdk/spectrum.bin", progress=moved.append)
    assert sum(moved) == len(CONTENT) and len(moved) > 1
    document = client.get(resource_id)
    assert document["state"] == "READY"
    assert document["sha256"] == hashlib.sha256(CONTENT).hexdigest()

    copy = client.download(resource_id, tmp_path / "copy.bin", progress=moved.append)
    assert copy.read_bytes() == CONTENT

    # Bytes changed behind the catalog's back are caught, and nothing is left on disk.
    _, env = shared_stack
    edge = _s3(shared_stack, f"http://127.0.0.1:{env['EXTRACT_SKYSTORE_EDGE_PORT']}")
    edge.put_object(Bucket=document["bucket"], Key=document["object"], Body=b"tampered")
    with pytest.raises(IntegrityError, match="sha256"):
        client.download(resource_id, tmp_path / "tampered.bin")
    assert not (tmp_path / "tampered.bin").exists()
    assert not (tmp_path / "tampered.bin.part").exists()


def test_data_objects_live_in_skystore_reachable_from_every_region_and_the_gateway(
    client: Client, shared_stack: Stack, tmp_path: Path
) -> None:
    """The catalog's default S3 service is SkyStore's edge proxy: a data-object's bytes are in
    the global namespace, read through the cloud proxy and the gateway's S3 port (SigV4 intact)."""
    _, env = shared_stack
    source = tmp_path / "a.bin"
    source.write_bytes(b"radio spectrum " * 1000)
    document = client.get(client.upload(source, object_key="runs/a.bin"))
    cloud = _s3(shared_stack, f"http://127.0.0.1:{env['EXTRACT_SKYSTORE_CLOUD_PORT']}")
    read = cloud.get_object(Bucket=document["bucket"], Key=document["object"])
    assert read["Body"].read() == source.read_bytes()
    gateway = _s3(shared_stack, f"https://localhost:{int(env['EXTRACT_GATEWAY_PORT']) + 1}")
    ranged = gateway.get_object(
        Bucket=document["bucket"], Key=document["object"], Range="bytes=0-4"
    )
    assert ranged["Body"].read() == b"radio"
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):  # TLS only: no answer
        httpx.get(f"http://localhost:{int(env['EXTRACT_GATEWAY_PORT']) + 1}/", timeout=5)


def test_cli_put_search_and_get(
    shared_stack: Stack, api_key: tuple[str, str], tmp_path: Path
) -> None:
    _, env = shared_stack
    env = {
        **env,
        "EXTRACT_ENDPOINT": f"https://localhost:{env['EXTRACT_GATEWAY_PORT']}",
        "EXTRACT_API_KEY": api_key[0],
        "EXTRACT_API_SECRET": api_key[1],
    }
    source = tmp_path / "cli.bin"
    source.write_bytes(CONTENT)
    put = run(["put", str(source), "--object", "cli/cli.bin"], env)
    assert put.returncode == 0, put.stderr
    resource_id = put.stdout.strip()
    assert resource_id.startswith("data-object/")

    found = run(
        ["search", "data-object", "--filter", "object='cli/cli.bin'", "--select", "state"], env
    )
    assert found.returncode == 0, found.stderr
    assert [r["state"] for r in json.loads(found.stdout)["resources"]] == ["READY"]

    got = run(["get", resource_id, "-o", str(tmp_path / "back.bin")], env)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "back.bin").read_bytes() == CONTENT

    refused = run(["search", "data-object"], {**env, "EXTRACT_API_SECRET": "wrong"})
    assert refused.returncode == 1 and "error" in refused.stderr


def test_s3_keys_from_the_gateway_work_on_its_s3_port_until_revoked(
    client: Client, shared_stack: Stack
) -> None:
    home, env = shared_stack
    credential, access, secret = client.create_s3_key(name="laptop")
    assert "secret-key" not in client.get(credential)
    s3 = boto3.client(
        "s3",
        endpoint_url=f"https://localhost:{int(env['EXTRACT_GATEWAY_PORT']) + 1}",
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        verify=str(home / "tls" / "ca.pem"),
    )
    s3.create_bucket(Bucket="sdk-key-test")
    s3.put_object(Bucket="sdk-key-test", Key="k", Body=b"v")
    assert s3.get_object(Bucket="sdk-key-test", Key="k")["Body"].read() == b"v"
    client.delete(credential)

    def refused() -> bool:
        try:
            s3.list_objects_v2(Bucket="sdk-key-test")
        except ClientError as error:
            return error.response["Error"]["Code"] == "InvalidAccessKeyId"
        return False

    deadline = time.monotonic() + 20  # the proxies cache keys for 5 s in the local stack
    while not refused():
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.5)
