"""The S3 port: boto3 through the gateway's TLS to a real SkyStore proxy, SigV4 intact."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from conftest import GatewayFactory
from gw_servers import ThreadedServer
from gw_skystore import SkyStore

from servicekit.infra.ports import free_port


@pytest.fixture
def s3_gateway(make_gateway: GatewayFactory, skystore: SkyStore) -> tuple[ThreadedServer, str]:
    """A gateway with its S3 port in front of SkyStore, and that port's base URL."""
    port = free_port()
    server = make_gateway(skystore_url=skystore.proxy.url, s3_port=port)
    return server, f"https://127.0.0.1:{port}"


def _s3(url: str, skystore: SkyStore, ca: Path) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=skystore.key_id,
        aws_secret_access_key=skystore.secret,
        region_name="us-east-1",
        verify=str(ca),
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
    )


def test_boto3_works_through_the_s3_port_with_sigv4_verified_upstream(
    s3_gateway: tuple[ThreadedServer, str],
    skystore: SkyStore,
    tls_files: tuple[Path, Path, Path],
) -> None:
    s3 = _s3(s3_gateway[1], skystore, tls_files[0])
    s3.create_bucket(Bucket="gw-roundtrip")
    data = bytes(range(256)) * 4096  # 1 MiB
    s3.put_object(Bucket="gw-roundtrip", Key="dir/a b+c.bin", Body=data)
    whole = s3.get_object(Bucket="gw-roundtrip", Key="dir/a b+c.bin")
    assert whole["Body"].read() == data
    ranged = s3.get_object(Bucket="gw-roundtrip", Key="dir/a b+c.bin", Range="bytes=1000-1999")
    assert ranged["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert ranged["Body"].read() == data[1000:2000]
    listing = s3.list_objects_v2(Bucket="gw-roundtrip", Prefix="dir/")
    assert [o["Key"] for o in listing["Contents"]] == ["dir/a b+c.bin"]
    s3.delete_object(Bucket="gw-roundtrip", Key="dir/a b+c.bin")
    assert s3.list_objects_v2(Bucket="gw-roundtrip").get("KeyCount") == 0
    s3.delete_bucket(Bucket="gw-roundtrip")
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert "gw-roundtrip" not in names


def test_presigned_url_made_for_the_s3_port_works(
    s3_gateway: tuple[ThreadedServer, str],
    skystore: SkyStore,
    tls_files: tuple[Path, Path, Path],
    tls_client_context: ssl.SSLContext,
) -> None:
    s3 = _s3(s3_gateway[1], skystore, tls_files[0])
    s3.create_bucket(Bucket="gw-presigned")
    s3.put_object(Bucket="gw-presigned", Key="k", Body=b"shared")
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "gw-presigned", "Key": "k"}, ExpiresIn=60
    )
    assert httpx.get(url, verify=tls_client_context).content == b"shared"
    s3.delete_object(Bucket="gw-presigned", Key="k")
    s3.delete_bucket(Bucket="gw-presigned")


def test_a_tampered_signature_still_gets_signature_does_not_match(
    s3_gateway: tuple[ThreadedServer, str],
    skystore: SkyStore,
    tls_files: tuple[Path, Path, Path],
) -> None:
    s3 = _s3(s3_gateway[1], skystore, tls_files[0])

    def tamper(request: Any, **_: Any) -> None:
        authorization = request.headers["Authorization"]
        if isinstance(authorization, bytes):
            authorization = authorization.decode()
        flipped = "0" if authorization[-1] != "0" else "1"
        request.headers["Authorization"] = authorization[:-1] + flipped

    s3.meta.events.register("before-send.s3.ListBuckets", tamper)
    with pytest.raises(ClientError) as caught:
        s3.list_buckets()
    assert caught.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


async def test_a_body_over_the_s3_object_limit_is_refused_before_upstream(
    s3_gateway: tuple[ThreadedServer, str], tls_client_context: ssl.SSLContext
) -> None:
    async with httpx.AsyncClient(verify=tls_client_context) as client:
        response = await client.put(
            f"{s3_gateway[1]}/bucket/key",
            content=b"x",
            headers={"x-amz-decoded-content-length": str(6 * 1024**3)},
        )
    assert response.status_code == 413
    assert "<Code>EntityTooLarge</Code>" in response.text


async def test_s3_requests_are_counted_in_the_gateway_metrics(
    s3_gateway: tuple[ThreadedServer, str],
    skystore: SkyStore,
    tls_files: tuple[Path, Path, Path],
    client_of: Any,
) -> None:
    _s3(s3_gateway[1], skystore, tls_files[0]).list_buckets()
    metrics = (await client_of(s3_gateway[0]).get("/metrics")).text
    assert 'route="s3:/{bucket}/{key}"' in metrics


async def test_the_main_port_points_s3_clients_to_the_s3_port(
    make_gateway: GatewayFactory, client_of: Any
) -> None:
    response = await client_of(make_gateway()).get("/s3/bucket/key")
    assert response.status_code == 404
    assert "EXTRACT_GATEWAY_S3_PORT" in response.json()["detail"]


async def test_requests_reach_skystore_unchanged_without_an_identity_token(
    make_gateway: GatewayFactory, upstream: ThreadedServer, tls_client_context: ssl.SSLContext
) -> None:
    port = free_port()
    make_gateway(skystore_url=upstream.url, s3_port=port)
    signed = "AWS4-HMAC-SHA256 Credential=AKID/20261203/us-east-1/s3/aws4_request, Signature=ab"
    async with httpx.AsyncClient(verify=tls_client_context) as client:
        response = await client.get(
            f"https://127.0.0.1:{port}/raw/a%2Fb%20c?list-type=2&prefix=x%2F",
            headers={
                "host": "s3.example.test:9000",
                "authorization": signed,
                "x-amz-date": "20261203T120000Z",
                "connection": "keep-alive, x-drop-me",
                "x-drop-me": "hop-by-hop",
            },
        )
    echoed = response.json()
    headers = dict(echoed["headers"])
    assert echoed["raw_path"] == "/raw/a%2Fb%20c"
    assert echoed["query"] == "list-type=2&prefix=x%2F"
    assert headers["host"] == "s3.example.test:9000"
    assert headers["authorization"] == signed  # no identity token in its place
    assert headers["x-amz-date"] == "20261203T120000Z"
    assert "x-drop-me" not in headers
    assert not any(name.startswith("x-forwarded-") for name in headers)
