"""The local certificate authority (security/ca.py)."""

from __future__ import annotations

import ipaddress
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from servicekit.security import LocalCA, WeakCertificateError, server_context


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _chain(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


@pytest.fixture
def ca(tmp_path: Path) -> LocalCA:
    return LocalCA.load_or_create(tmp_path / "ca")


def test_the_ca_is_a_p256_ca_for_ten_years(ca: LocalCA) -> None:
    certificate = x509.load_pem_x509_certificate(ca.cert_path.read_bytes())
    assert isinstance(certificate.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(certificate.public_key().curve, ec.SECP256R1)  # type: ignore[union-attr]
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and not usage.value.digital_signature
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert timedelta(days=3650) <= lifetime <= timedelta(days=3651)
    certificate.verify_directly_issued_by(certificate)


def test_the_ca_key_is_private_and_the_certificate_public(ca: LocalCA) -> None:
    assert (ca.key_path.name, _mode(ca.key_path)) == ("ca.key.pem", 0o600)
    assert (ca.cert_path.name, _mode(ca.cert_path)) == ("ca.pem", 0o644)


def test_load_or_create_reuses_the_ca(ca: LocalCA) -> None:
    pem, key_pem = ca.cert_path.read_bytes(), ca.key_path.read_bytes()
    again = LocalCA.load_or_create(ca.directory)
    assert again.certificate == ca.certificate
    assert (ca.cert_path.read_bytes(), ca.key_path.read_bytes()) == (pem, key_pem)


def test_a_ca_about_to_expire_is_replaced(ca: LocalCA) -> None:
    now = datetime.now(UTC)
    expiring = (
        x509.CertificateBuilder()
        .subject_name(ca.certificate.subject)
        .issuer_name(ca.certificate.subject)
        .public_key(ca.private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=3640))
        .not_valid_after(now + timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca.private_key, hashes.SHA256())
    )
    ca.cert_path.write_bytes(expiring.public_bytes(serialization.Encoding.PEM))
    renewed = LocalCA.load_or_create(ca.directory)
    assert renewed.certificate.not_valid_after_utc > now + timedelta(days=3000)


def test_a_ca_certificate_not_matching_its_key_is_an_error(ca: LocalCA, tmp_path: Path) -> None:
    other = LocalCA.load_or_create(tmp_path / "other")
    ca.cert_path.write_bytes(other.cert_path.read_bytes())
    with pytest.raises(ValueError, match=r"ca\.pem does not match ca\.key\.pem"):
        LocalCA.load_or_create(ca.directory)


def test_a_server_certificate_names_dns_and_ip_addresses(ca: LocalCA, tmp_path: Path) -> None:
    cert_path, key_path = ca.issue_server_certificate(
        ["localhost", "catalog.extract.local", "127.0.0.1", "::1"], tmp_path, "catalog"
    )
    assert (cert_path, key_path) == (tmp_path / "catalog.pem", tmp_path / "catalog.key.pem")
    leaf = _chain(cert_path)[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "catalog.extract.local"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "localhost"


def test_a_leaf_is_p256_for_a_year_and_issued_by_the_ca(ca: LocalCA, tmp_path: Path) -> None:
    cert_path, key_path = ca.issue_server_certificate(["localhost"], tmp_path, "server")
    leaf = _chain(cert_path)[0]
    leaf.verify_directly_issued_by(ca.certificate)
    assert isinstance(leaf.public_key().curve, ec.SECP256R1)  # type: ignore[union-attr]
    assert isinstance(leaf.signature_hash_algorithm, hashes.SHA256)
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert timedelta(days=365) <= lifetime <= timedelta(days=366)
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert key.public_key() == leaf.public_key()  # type: ignore[union-attr]


def test_the_chain_file_is_leaf_then_ca_and_the_key_is_private(ca: LocalCA, tmp_path: Path) -> None:
    cert_path, key_path = ca.issue_server_certificate(["localhost"], tmp_path, "server")
    chain = _chain(cert_path)
    assert len(chain) == 2
    assert chain[1] == ca.certificate
    assert (_mode(key_path), _mode(cert_path)) == (0o600, 0o644)


def test_issuing_again_reuses_valid_files(ca: LocalCA, tmp_path: Path) -> None:
    cert_path, key_path = ca.issue_server_certificate(["localhost", "::1"], tmp_path, "s")
    before = cert_path.read_bytes(), key_path.read_bytes()
    assert ca.issue_server_certificate(["::1", "localhost"], tmp_path, "s") == (cert_path, key_path)
    assert (cert_path.read_bytes(), key_path.read_bytes()) == before


def test_other_names_get_a_new_certificate(ca: LocalCA, tmp_path: Path) -> None:
    cert_path, _ = ca.issue_server_certificate(["localhost"], tmp_path, "s")
    before = cert_path.read_bytes()
    ca.issue_server_certificate(["localhost", "gateway"], tmp_path, "s")
    assert cert_path.read_bytes() != before


def test_a_certificate_of_another_ca_is_replaced(ca: LocalCA, tmp_path: Path) -> None:
    other = LocalCA.load_or_create(tmp_path / "other")
    cert_path, _ = other.issue_server_certificate(["localhost"], tmp_path, "s")
    ca.issue_server_certificate(["localhost"], tmp_path, "s")
    _chain(cert_path)[0].verify_directly_issued_by(ca.certificate)


def test_a_damaged_certificate_is_replaced(ca: LocalCA, tmp_path: Path) -> None:
    cert_path, _ = ca.issue_server_certificate(["localhost"], tmp_path, "s")
    cert_path.write_text("damaged")
    ca.issue_server_certificate(["localhost"], tmp_path, "s")
    _chain(cert_path)[0].verify_directly_issued_by(ca.certificate)


def test_a_server_certificate_needs_a_name(ca: LocalCA, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one DNS name or IP address"):
        ca.issue_server_certificate([], tmp_path, "s")


def test_a_client_certificate_is_for_client_auth_under_its_name(
    ca: LocalCA, tmp_path: Path
) -> None:
    cert_path, key_path = ca.issue_client_certificate("svc-staging", tmp_path, "staging")
    leaf = _chain(cert_path)[0]
    leaf.verify_directly_issued_by(ca.certificate)
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "svc-staging"
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert _mode(key_path) == 0o600
    before = cert_path.read_bytes()
    ca.issue_client_certificate("svc-staging", tmp_path, "staging")
    assert cert_path.read_bytes() == before
    ca.issue_client_certificate("svc-twin", tmp_path, "staging")
    assert cert_path.read_bytes() != before


def test_a_server_certificate_is_not_reused_as_a_client_certificate(
    ca: LocalCA, tmp_path: Path
) -> None:
    ca.issue_server_certificate(["svc"], tmp_path, "svc")
    cert_path, _ = ca.issue_client_certificate("svc", tmp_path, "svc")
    usage = _chain(cert_path)[0].extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(usage.value) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_production_mode_accepts_a_leaf_of_the_local_ca(ca: LocalCA, tmp_path: Path) -> None:
    cert_path, key_path = ca.issue_server_certificate(["localhost"], tmp_path, "server")
    server_context(cert_path, key_path, production=True)


def test_production_mode_refuses_the_self_signed_ca_itself(ca: LocalCA) -> None:
    with pytest.raises(WeakCertificateError) as refused:
        server_context(ca.cert_path, ca.key_path, production=True)
    assert str(refused.value) == (
        f"{ca.cert_path}: refusing this certificate in production mode: "
        "it is self-signed; use a certificate issued by a certificate authority"
    )
