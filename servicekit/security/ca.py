"""A local certificate authority for the local stack and tests: ECDSA P-256 CA and leaves."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from servicekit.security.keys import write_file_atomically

CA_VALIDITY = timedelta(days=3650)
LEAF_VALIDITY = timedelta(days=365)
# Existing files this close to expiry are replaced rather than reused.
RENEW_BEFORE = timedelta(days=30)
# Machines of one local stack disagree a little about the time.
_BACKDATE = timedelta(minutes=5)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "EXTRACT local stack"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _key_usage(*, digital_signature: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _same_key(certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    return certificate.public_key().public_bytes(encoding, spki) == key.public_key().public_bytes(
        encoding, spki
    )


def _fresh(certificate: x509.Certificate, now: datetime) -> bool:
    return certificate.not_valid_before_utc <= now + _BACKDATE and (
        now + RENEW_BEFORE < certificate.not_valid_after_utc
    )


def _load_pair(
    cert_path: Path, key_path: Path
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The certificate and key stored at these paths, or None if either file is missing."""
    try:
        cert_pem, key_pem = cert_path.read_bytes(), key_path.read_bytes()
    except FileNotFoundError:
        return None
    certificate = x509.load_pem_x509_certificates(cert_pem)[0]
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path}: not an EC private key")
    return certificate, key


class LocalCA:
    """A CA whose `ca.pem` the local stack's clients trust; it issues the stack's certificates."""

    def __init__(
        self,
        directory: Path,
        certificate: x509.Certificate,
        private_key: ec.EllipticCurvePrivateKey,
    ) -> None:
        self.directory = directory
        self.certificate = certificate
        self.private_key = private_key

    @property
    def cert_path(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def key_path(self) -> Path:
        return self.directory / "ca.key.pem"

    @classmethod
    def load_or_create(cls, directory: Path) -> LocalCA:
        """The CA in `directory` (ca.pem, ca.key.pem), created when missing or about to expire."""
        now = datetime.now(UTC)
        pair = _load_pair(directory / "ca.pem", directory / "ca.key.pem")
        if pair is not None:
            certificate, key = pair
            if not _same_key(certificate, key):
                raise ValueError(
                    f"{directory}: ca.pem does not match ca.key.pem; "
                    "delete both to create a new local CA"
                )
            if _fresh(certificate, now):
                return cls(directory, certificate, key)
        key = ec.generate_private_key(ec.SECP256R1())
        public_key = key.public_key()
        name = _name("EXTRACT local CA")
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .sign(key, hashes.SHA256())
        )
        ca = cls(directory, certificate, key)
        # Key first: a crash in between leaves no certificate without its key.
        write_file_atomically(ca.key_path, _key_pem(key), mode=0o600)
        write_file_atomically(ca.cert_path, _pem(certificate), mode=0o644)
        return ca

    def issue_server_certificate(
        self, names: list[str], directory: Path, stem: str
    ) -> tuple[Path, Path]:
        """`<stem>.pem` (leaf + CA) and `<stem>.key.pem` for a TLS server known by `names`
        (DNS names or IP addresses); existing valid files for the same names are reused."""
        if not names:
            raise ValueError("a server certificate needs at least one DNS name or IP address")
        alternative_names = x509.SubjectAlternativeName([_general_name(n) for n in names])

        def wanted(certificate: x509.Certificate) -> bool:
            san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            return set(san.value) == set(alternative_names)

        return self._issue(
            names[0],
            ExtendedKeyUsageOID.SERVER_AUTH,
            [alternative_names],
            wanted,
            directory / f"{stem}.pem",
            directory / f"{stem}.key.pem",
        )

    def issue_client_certificate(
        self, common_name: str, directory: Path, stem: str
    ) -> tuple[Path, Path]:
        """`<stem>.pem` (leaf + CA) and `<stem>.key.pem` for a mutual-TLS client named
        `common_name`; existing valid files for the same name are reused."""

        def wanted(certificate: x509.Certificate) -> bool:
            return certificate.subject == _name(common_name)

        return self._issue(
            common_name,
            ExtendedKeyUsageOID.CLIENT_AUTH,
            [],
            wanted,
            directory / f"{stem}.pem",
            directory / f"{stem}.key.pem",
        )

    def _issue(
        self,
        common_name: str,
        purpose: x509.ObjectIdentifier,
        extra: list[x509.ExtensionType],
        wanted: Callable[[x509.Certificate], bool],
        cert_path: Path,
        key_path: Path,
    ) -> tuple[Path, Path]:
        now = datetime.now(UTC)
        if self._reusable(cert_path, key_path, purpose, wanted, now):
            return cert_path, key_path
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(min(now + LEAF_VALIDITY, self.certificate.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.private_key.public_key()),
                critical=False,
            )
        )
        for extension in extra:
            builder = builder.add_extension(extension, critical=False)
        certificate = builder.sign(self.private_key, hashes.SHA256())
        write_file_atomically(key_path, _key_pem(key), mode=0o600)
        write_file_atomically(cert_path, _pem(certificate) + _pem(self.certificate), mode=0o644)
        return cert_path, key_path

    def _reusable(
        self,
        cert_path: Path,
        key_path: Path,
        purpose: x509.ObjectIdentifier,
        wanted: Callable[[x509.Certificate], bool],
        now: datetime,
    ) -> bool:
        # Anything unreadable or off is replaced: these files are only ever written here.
        try:
            pair = _load_pair(cert_path, key_path)
            if pair is None:
                return False
            certificate, key = pair
            certificate.verify_directly_issued_by(self.certificate)
            usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
            return (
                purpose in usage.value
                and _fresh(certificate, now)
                and _same_key(certificate, key)
                and wanted(certificate)
            )
        except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
            return False
