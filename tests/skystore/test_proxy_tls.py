"""The S3 proxy served over TLS (servicekit's server context): SigV4 clients trusting the CA work,
plain HTTP and clients without the CA get no S3 answer."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, SSLError

from servicekit.security import LocalCA
from servicekit.testing import ServiceProcess


@pytest.fixture(scope="module")
def tls_proxy(
    stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServiceProcess, Path]]:
    directory = tmp_path_factory.mktemp("skystore-tls")
    ca = LocalCA.load_or_create(directory)
    cert, key = ca.issue_server_certificate(["127.0.0.1", "localhost"], directory, "proxy")
    proxy = stack.proxy_process(
        "local:edge",
        "edge-tls",
        verify=ssl.create_default_context(cafile=ca.cert_path),
        EXTRACT_SKYSTORE_PROXY_TLS_CERT=str(cert),
        EXTRACT_SKYSTORE_PROXY_TLS_KEY=str(key),
    )
    proxy.start()
    try:
        yield proxy, ca.cert_path
    finally:
        proxy.stop()


def _client(stack, url: str, *, verify: Any, secret: str | None = None) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=stack.key_id,
        aws_secret_access_key=secret or stack.secret,
        region_name="us-east-1",
        verify=verify,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def test_boto3_with_the_ca_file_talks_sigv4_over_tls(stack, tls_proxy) -> None:
    proxy, ca = tls_proxy
    assert proxy.url.startswith("https://")
    s3 = _client(stack, proxy.url, verify=str(ca))
    bucket = f"tls-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="secret/doc", Body=b"over tls")
    assert s3.get_object(Bucket=bucket, Key="secret/doc")["Body"].read() == b"over tls"
    # The same object through the plain proxy of the same region: one namespace.
    assert stack.client().head_object(Bucket=bucket, Key="secret/doc")["ContentLength"] == 8


def test_a_wrong_signature_over_tls_is_refused(stack, tls_proxy) -> None:
    proxy, ca = tls_proxy
    s3 = _client(stack, proxy.url, verify=str(ca), secret="not-the-secret")
    with pytest.raises(ClientError) as refused:
        s3.list_buckets()
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_plain_http_to_the_tls_port_gets_no_http_answer(tls_proxy) -> None:
    proxy, _ = tls_proxy
    with pytest.raises(httpx.TransportError):
        httpx.get(proxy.url.replace("https://", "http://") + "/", timeout=5)


def test_a_client_without_the_ca_refuses_the_certificate(stack, tls_proxy) -> None:
    proxy, _ = tls_proxy
    with pytest.raises(SSLError):
        _client(
            stack, proxy.url, verify=ssl.get_default_verify_paths().cafile or True
        ).list_buckets()
