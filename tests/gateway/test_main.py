"""`python -m gateway`: TLS only, with the local CA's ECDSA P-256 certificate; production
mode refuses a self-signed certificate at start-up."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from servicekit.infra.ports import free_port
from servicekit.security import LocalCA, client_context
from servicekit.testing import ServiceProcess


def _env(tmp_path: Path, cert: Path, key: Path, identity_key_file: Path) -> dict[str, str]:
    return {
        "EXTRACT_HOME": str(tmp_path / "home"),
        "EXTRACT_GATEWAY_TLS_CERT": str(cert),
        "EXTRACT_GATEWAY_TLS_KEY": str(key),
        "EXTRACT_GATEWAY_IDENTITY_KEY": str(identity_key_file),
        "EXTRACT_GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'gw.sqlite'}",
        "EXTRACT_GATEWAY_CATALOG_URL": "",
    }


def test_serves_tls_only_with_an_ecdsa_p256_certificate(
    tmp_path: Path, tls_files: tuple[Path, Path, Path], identity_key_file: Path
) -> None:
    ca, cert, key = tls_files
    port = free_port()
    gateway = ServiceProcess(
        "gateway",
        tmp_path,
        env={**_env(tmp_path, cert, key, identity_key_file), "EXTRACT_GATEWAY_PORT": str(port)},
        port=port,
        scheme="https",
        verify=ssl.create_default_context(cafile=ca),  # type: ignore[arg-type]
    )
    try:
        gateway.start(timeout=60)
        assert (
            httpx.get(f"{gateway.url}/healthz", verify=gateway.verify).json()["service"]
            == "gateway"
        )
        context = ssl.create_default_context(cafile=ca)
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            leaf = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
        public_key = leaf.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        assert public_key.curve.name == "secp256r1"
        # No clear text on the same port.
        try:
            plain = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        except httpx.HTTPError:
            pass
        else:
            assert plain.status_code == 400
    finally:
        gateway.stop()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "self.pem", directory / "self.key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_production_mode_refuses_a_self_signed_certificate(
    tmp_path: Path, identity_key_file: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    env = {
        **_env(tmp_path, cert, key, identity_key_file),
        "EXTRACT_GATEWAY_PORT": str(free_port()),
        "EXTRACT_GATEWAY_ENV": "production",
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "-m", "gateway"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "self-signed" in result.stderr
    assert "cannot serve TLS" in result.stderr


def test_mutual_tls_admits_only_clients_with_a_certificate_from_the_ca(
    tmp_path: Path, tls_files: tuple[Path, Path, Path], identity_key_file: Path
) -> None:
    ca_file, cert, key = tls_files
    ca = LocalCA.load_or_create(ca_file.parent)
    client_cert, client_key = ca.issue_client_certificate("site-edge", tmp_path, "site-edge")
    with_certificate = client_context(ca_file, cert_file=client_cert, key_file=client_key)
    port = free_port()
    env = {
        **_env(tmp_path, cert, key, identity_key_file),
        "EXTRACT_GATEWAY_PORT": str(port),
        "EXTRACT_GATEWAY_TLS_CA": str(ca_file),
    }
    gateway = ServiceProcess(
        "gateway",
        tmp_path,
        env=env,
        port=port,
        scheme="https",
        verify=with_certificate,  # type: ignore[arg-type]
    )
    try:
        gateway.start(timeout=60)
        assert httpx.get(f"{gateway.url}/healthz", verify=with_certificate).status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{gateway.url}/healthz", verify=client_context(ca_file))
    finally:
        gateway.stop()


def test_serves_the_s3_port_over_tls_too(
    tmp_path: Path, tls_files: tuple[Path, Path, Path], identity_key_file: Path
) -> None:
    ca, cert, key = tls_files
    port, s3_port = free_port(), free_port()
    env = {
        **_env(tmp_path, cert, key, identity_key_file),
        "EXTRACT_GATEWAY_PORT": str(port),
        "EXTRACT_GATEWAY_S3_PORT": str(s3_port),
        "EXTRACT_GATEWAY_SKYSTORE_URL": f"http://127.0.0.1:{free_port()}",  # nothing there
    }
    verify = ssl.create_default_context(cafile=ca)
    gateway = ServiceProcess(
        "gateway",
        tmp_path,
        env=env,
        port=port,
        scheme="https",
        verify=verify,  # type: ignore[arg-type]
    )
    try:
        gateway.start(timeout=60)
        response = httpx.get(f"https://127.0.0.1:{s3_port}/bucket/key", verify=verify)
        assert response.status_code == 502
        assert "<Code>BadGateway</Code>" in response.text
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{s3_port}/bucket/key", timeout=5)
    finally:
        gateway.stop()
