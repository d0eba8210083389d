"""serve() over TLS: a real uvicorn with the platform's TLS context, probed with stdlib ssl."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from servicekit.infra import ManagedProcess, free_port
from servicekit.security import LocalCA, client_context

SERVICE = """
from servicekit.app import create_service_app
from servicekit.serve import serve
from servicekit.settings import ServiceSettings

settings = ServiceSettings()
serve(lambda: create_service_app(name="tls-probe", settings=settings), settings)
"""


def _env(port: int, cert: Path, key: Path, env: str = "development") -> dict[str, str]:
    return {
        "EXTRACT_SERVICE_PORT": str(port),
        "EXTRACT_SERVICE_TLS_CERT": str(cert),
        "EXTRACT_SERVICE_TLS_KEY": str(key),
        "EXTRACT_SERVICE_ENV": env,
    }


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return LocalCA.load_or_create(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def tls_service(ca: LocalCA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    directory = tmp_path_factory.mktemp("tls-service")
    cert, key = ca.issue_server_certificate(["localhost", "127.0.0.1"], directory, "server")
    port = free_port()
    verify = client_context(ca.cert_path)

    def ready() -> bool:
        try:
            url = f"https://127.0.0.1:{port}/healthz"
            return httpx.get(url, verify=verify, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    process = ManagedProcess(
        name="tls-probe",
        command=[sys.executable, "-c", SERVICE],
        log_path=directory / "service.log",
        ready=ready,
        env=_env(port, cert, key),
    )
    process.start(timeout=30)
    yield port
    process.stop()


def _handshake(port: int, context: ssl.SSLContext) -> tuple[str, str]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return tls.version() or "", tls.cipher()[0]


def _old_client(ca: LocalCA, *, maximum: ssl.TLSVersion, ciphers: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(ca.cert_path)
    with warnings.catch_warnings():
        # Deliberately old: the point is to offer what the server must refuse.
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = maximum
    # Security level 0 lets this client offer what it asks for: any refusal is the server's.
    context.set_ciphers(f"{ciphers}:@SECLEVEL=0")
    return context


def test_modern_client_gets_an_aead_suite(tls_service: int, ca: LocalCA) -> None:
    client = ssl.create_default_context(cafile=str(ca.cert_path))
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    version, cipher = _handshake(tls_service, client)
    assert version == "TLSv1.2"
    assert cipher in {
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    }


def test_tls13_is_served(tls_service: int, ca: LocalCA) -> None:
    version, _ = _handshake(tls_service, ssl.create_default_context(cafile=str(ca.cert_path)))
    assert version == "TLSv1.3"


def test_tls11_client_is_refused(tls_service: int, ca: LocalCA) -> None:
    old = _old_client(ca, maximum=ssl.TLSVersion.TLSv1_1, ciphers="ALL")
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        _handshake(tls_service, old)


def test_cbc_only_client_is_refused(tls_service: int, ca: LocalCA) -> None:
    cbc = _old_client(
        ca,
        maximum=ssl.TLSVersion.TLSv1_2,
        ciphers="ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256",
    )
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        _handshake(tls_service, cbc)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "self.pem", directory / "self.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_production_refuses_a_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", SERVICE],
        env={**_env(free_port(), cert, key, env="production"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "self-signed" in done.stderr
    assert str(cert) in done.stderr
