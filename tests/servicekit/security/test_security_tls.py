"""The TLS policy, proven against real TLS servers on free ports (security/tls.py)."""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from servicekit.security import (
    MODERN_TLS12_CIPHERS,
    LocalCA,
    WeakCertificateError,
    client_context,
    server_context,
)

TLS13_AEAD_SUITES = {
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
}
TIMESTAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"
ECDSA_SUITES = [s for s in MODERN_TLS12_CIPHERS if s.startswith("ECDHE-ECDSA")]
RSA_SUITES = [s for s in MODERN_TLS12_CIPHERS if s.startswith("ECDHE-RSA")]


@dataclass(frozen=True)
class Pki:
    ca: LocalCA
    cert: Path  # ECDSA P-256 server certificate for localhost and 127.0.0.1
    key: Path
    rsa_cert: Path  # RSA 2048 server certificate, for the ECDHE-RSA suites
    rsa_key: Path
    client_cert: Path
    client_key: Path


def _write_leaf(
    directory: Path,
    stem: str,
    private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey,
    *,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey] | None = None,
    not_before: timedelta = timedelta(days=-1),
    not_after: timedelta = timedelta(days=30),
) -> tuple[Path, Path]:
    """A localhost server certificate for `private_key`, self-signed unless `issuer` is given."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    issuer_name, issuer_key = issuer if issuer is not None else (subject, private_key)
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + not_before)
        .not_valid_after(now + not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = LocalCA.load_or_create(directory / "ca")
    cert, key = ca.issue_server_certificate(["localhost", "127.0.0.1"], directory, "server")
    rsa_cert, rsa_key = _write_leaf(
        directory,
        "rsa",
        rsa.generate_private_key(65537, 2048),
        issuer=(ca.certificate.subject, ca.private_key),
    )
    client_cert, client_key = ca.issue_client_certificate("svc-scheduler", directory, "client")
    return Pki(ca, cert, key, rsa_cert, rsa_key, client_cert, client_key)


class EchoServer:
    """A real asyncio TLS server that echoes one message, followed by the client's CN if any.

    The handshake runs through `start_tls` inside the handler so that, when the server refuses
    a client, the test sees the server's own reason (asyncio aborts the connection, so the
    client only sees a reset).
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.port = 0
        self.refusals: asyncio.Queue[OSError] = asyncio.Queue()
        self.handlers: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            await writer.start_tls(self.context)
            message = await reader.read(100)
            peer = writer.get_extra_info("peercert")
            if peer:
                message += b" " + dict(rdn[0] for rdn in peer["subject"])["commonName"].encode()
            writer.write(message)
            await writer.drain()
        except OSError as exc:
            self.refusals.put_nowait(exc)
        finally:
            writer.close()
            with suppress(OSError):
                await writer.wait_closed()

    async def refusal(self) -> OSError:
        return await asyncio.wait_for(self.refusals.get(), timeout=5)

    async def handlers_done(self) -> None:
        if self.handlers:
            _, pending = await asyncio.wait(self.handlers, timeout=5)
            assert not pending, "a server connection did not finish"


@asynccontextmanager
async def serving(context: ssl.SSLContext) -> AsyncIterator[EchoServer]:
    echo = EchoServer(context)
    server = await asyncio.start_server(echo.handle, "127.0.0.1", 0)
    echo.port = server.sockets[0].getsockname()[1]
    async with server:
        yield echo
    await echo.handlers_done()


@dataclass(frozen=True)
class Session:
    version: str
    cipher: str
    reply: bytes


async def exchange(
    server: EchoServer, context: ssl.SSLContext, hostname: str = "localhost"
) -> Session:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.port, ssl=context, server_hostname=hostname
    )
    try:
        tls = writer.get_extra_info("ssl_object")
        assert tls.compression() is None
        writer.write(b"ping")
        await writer.drain()
        return Session(tls.version(), tls.cipher()[0], await reader.read(100))
    finally:
        writer.close()
        with suppress(OSError):
            await writer.wait_closed()


def tls11_client(ca: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(ca)
    # OpenSSL 3 refuses TLS 1.1 client-side at its default security level; level 0 lets this
    # client offer it, so the refusal observed is the server's.
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.warns(DeprecationWarning, match="TLSv1"):
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    return context


def cbc_client(ca: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(ca)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA")
    return context


def tls12_client(ca: Path, suites: str | None = None) -> ssl.SSLContext:
    context = client_context(ca)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    if suites is not None:
        context.set_ciphers(suites)
    return context


def permissive_server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.warns(DeprecationWarning, match="TLSv1"):
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.load_cert_chain(cert, key)
    return context


# The contexts themselves


@pytest.mark.parametrize("side", ["server", "client"])
def test_tls12_suites_are_exactly_the_six_and_tls13_keeps_its_aead_suites(
    pki: Pki, side: str
) -> None:
    context = (
        server_context(pki.cert, pki.key) if side == "server" else client_context(pki.ca.cert_path)
    )
    ciphers = context.get_ciphers()
    assert {c["name"] for c in ciphers if c["protocol"] == "TLSv1.2"} == set(MODERN_TLS12_CIPHERS)
    assert {c["name"] for c in ciphers if c["protocol"] == "TLSv1.3"} == TLS13_AEAD_SUITES
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_server_context_disables_compression_and_renegotiation(pki: Pki) -> None:
    context = server_context(pki.cert, pki.key)
    for option in (ssl.OP_NO_COMPRESSION, ssl.OP_NO_RENEGOTIATION, ssl.OP_CIPHER_SERVER_PREFERENCE):
        assert context.options & option == option


def test_client_context_refuses_a_key_without_a_certificate(pki: Pki) -> None:
    with pytest.raises(ValueError, match="key_file given without cert_file"):
        client_context(pki.ca.cert_path, key_file=pki.client_key)


# Handshakes against a real server


async def test_a_tls11_client_is_refused_by_the_server(pki: Pki) -> None:
    async with serving(server_context(pki.cert, pki.key)) as server:
        with pytest.raises(OSError):
            await exchange(server, tls11_client(pki.ca.cert_path))
        assert (await server.refusal()).reason == "UNSUPPORTED_PROTOCOL"


async def test_a_client_offering_only_cbc_suites_is_refused_by_the_server(pki: Pki) -> None:
    async with serving(server_context(pki.cert, pki.key)) as server:
        with pytest.raises(OSError):
            await exchange(server, cbc_client(pki.ca.cert_path))
        assert (await server.refusal()).reason == "NO_SHARED_CIPHER"


@pytest.mark.parametrize(
    ("make_client", "version"),
    [(tls11_client, "TLSv1.1"), (cbc_client, "TLSv1.2")],
    ids=["tls11", "cbc"],
)
async def test_the_refused_clients_work_against_a_permissive_server(
    pki: Pki, make_client: Callable[[Path], ssl.SSLContext], version: str
) -> None:
    # The control for the two refusals above: those clients can connect, the policy stops them.
    async with serving(permissive_server_context(pki.cert, pki.key)) as server:
        session = await exchange(server, make_client(pki.ca.cert_path))
    assert (session.version, session.reply) == (version, b"ping")
    assert session.cipher not in MODERN_TLS12_CIPHERS


@pytest.mark.parametrize("suite", ECDSA_SUITES + RSA_SUITES)
async def test_a_tls12_client_gets_each_allowed_suite(pki: Pki, suite: str) -> None:
    cert, key = (pki.cert, pki.key) if suite in ECDSA_SUITES else (pki.rsa_cert, pki.rsa_key)
    async with serving(server_context(cert, key)) as server:
        session = await exchange(server, tls12_client(pki.ca.cert_path, suite))
    assert (session.version, session.cipher, session.reply) == ("TLSv1.2", suite, b"ping")


async def test_the_server_picks_the_suite_by_its_own_preference(pki: Pki) -> None:
    offered = "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES256-GCM-SHA384"
    async with serving(server_context(pki.cert, pki.key)) as server:
        session = await exchange(server, tls12_client(pki.ca.cert_path, offered))
    assert session.cipher == "ECDHE-ECDSA-AES256-GCM-SHA384"


async def test_a_default_client_speaks_tls13(pki: Pki) -> None:
    async with serving(server_context(pki.cert, pki.key)) as server:
        session = await exchange(server, client_context(pki.ca.cert_path))
    assert session.version == "TLSv1.3"
    assert session.cipher in TLS13_AEAD_SUITES
    assert session.reply == b"ping"


async def test_the_client_verifies_the_server_by_ip_address(pki: Pki) -> None:
    async with serving(server_context(pki.cert, pki.key)) as server:
        session = await exchange(server, client_context(pki.ca.cert_path), hostname="127.0.0.1")
    assert session.reply == b"ping"


async def test_the_client_refuses_a_server_under_another_name(pki: Pki) -> None:
    async with serving(server_context(pki.cert, pki.key)) as server:
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            await exchange(server, client_context(pki.ca.cert_path), hostname="elsewhere.example")


async def test_the_client_refuses_a_server_its_ca_did_not_issue(pki: Pki, tmp_path: Path) -> None:
    other_ca = LocalCA.load_or_create(tmp_path / "other-ca")
    async with serving(server_context(pki.cert, pki.key)) as server:
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
            await exchange(server, client_context(other_ca.cert_path))


# Mutual TLS


async def test_mutual_tls_refuses_a_client_without_a_certificate(pki: Pki) -> None:
    context = server_context(pki.cert, pki.key, client_ca=pki.ca.cert_path)
    async with serving(context) as server:
        # In TLS 1.3 the client finishes its side before the server checks for a certificate,
        # so the client learns of the refusal only as a connection that never answers.
        with suppress(OSError):
            assert (await exchange(server, client_context(pki.ca.cert_path))).reply == b""
        assert (await server.refusal()).reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE"


async def test_mutual_tls_accepts_a_client_certificate_from_its_ca(pki: Pki) -> None:
    context = server_context(pki.cert, pki.key, client_ca=pki.ca.cert_path)
    client = client_context(pki.ca.cert_path, cert_file=pki.client_cert, key_file=pki.client_key)
    async with serving(context) as server:
        session = await exchange(server, client)
    assert session.reply == b"ping svc-scheduler"


async def test_mutual_tls_refuses_a_client_certificate_from_another_ca(
    pki: Pki, tmp_path: Path
) -> None:
    other_ca = LocalCA.load_or_create(tmp_path / "other-ca")
    cert, key = other_ca.issue_client_certificate("intruder", tmp_path, "intruder")
    context = server_context(pki.cert, pki.key, client_ca=pki.ca.cert_path)
    async with serving(context) as server:
        with suppress(OSError):
            await exchange(server, client_context(pki.ca.cert_path, cert_file=cert, key_file=key))
        assert (await server.refusal()).reason == "CERTIFICATE_VERIFY_FAILED"


# Production mode


def test_production_accepts_a_ca_issued_p256_certificate(pki: Pki) -> None:
    assert server_context(pki.cert, pki.key, production=True).minimum_version == (
        ssl.TLSVersion.TLSv1_2
    )


def test_development_mode_serves_a_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = _write_leaf(tmp_path, "self", ec.generate_private_key(ec.SECP256R1()))
    assert isinstance(server_context(cert, key), ssl.SSLContext)


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + content


def _write_sha1_leaf(directory: Path) -> tuple[Path, Path]:
    """A CA-issued leaf signed with sha1WithRSAEncryption, which cryptography refuses to make:
    sign with SHA-256, swap the algorithm identifier (same length), re-sign with SHA-1."""
    issuer_key = rsa.generate_private_key(65537, 2048)
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Legacy CA")])
    cert_path, key_path = _write_leaf(
        directory, "sha1", ec.generate_private_key(ec.SECP256R1()), issuer=(issuer, issuer_key)
    )
    sha256_with_rsa = bytes.fromhex("06092a864886f70d01010b")
    sha1_with_rsa = bytes.fromhex("06092a864886f70d010105")
    tbs = x509.load_pem_x509_certificate(cert_path.read_bytes()).tbs_certificate_bytes
    assert tbs.count(sha256_with_rsa) == 1
    tbs = tbs.replace(sha256_with_rsa, sha1_with_rsa)
    signature = issuer_key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())
    algorithm = _der(0x30, sha1_with_rsa + b"\x05\x00")
    der = _der(0x30, tbs + algorithm + _der(0x03, b"\x00" + signature))
    certificate = x509.load_der_x509_certificate(der)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _issued(
    private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey,
    **validity: timedelta,
) -> Callable[[Pki, Path], tuple[Path, Path]]:
    def write(pki: Pki, directory: Path) -> tuple[Path, Path]:
        issuer = (pki.ca.certificate.subject, pki.ca.private_key)
        return _write_leaf(directory, "leaf", private_key, issuer=issuer, **validity)

    return write


@pytest.mark.parametrize(
    ("write", "reason"),
    [
        (
            lambda pki, d: _write_leaf(d, "self", ec.generate_private_key(ec.SECP256R1())),
            r"it is self-signed; use a certificate issued by a certificate authority",
        ),
        (
            _issued(rsa.generate_private_key(65537, 1024)),
            r"its RSA key has 1024 bits; at least 2048 are needed",
        ),
        (
            _issued(ec.generate_private_key(ec.SECP256K1())),
            r"its EC key is on curve secp256k1; only P-256 or P-384 will do",
        ),
        (
            _issued(ed25519.Ed25519PrivateKey.generate()),
            r"its Ed25519PublicKey is not accepted; use ECDSA P-256",
        ),
        (
            _issued(ec.generate_private_key(ec.SECP256R1()), not_after=timedelta(days=-1)),
            rf"it expired at {TIMESTAMP}",
        ),
        (
            _issued(ec.generate_private_key(ec.SECP256R1()), not_before=timedelta(days=2)),
            rf"it is not valid before {TIMESTAMP}",
        ),
        (
            lambda pki, d: _write_sha1_leaf(d),
            r"it is signed with SHA1; SHA-256 or stronger is needed",
        ),
    ],
    ids=["self-signed", "rsa-1024", "secp256k1", "ed25519", "expired", "not-yet-valid", "sha1"],
)
def test_production_refuses_a_weak_certificate_naming_file_and_reason(
    pki: Pki,
    tmp_path: Path,
    write: Callable[[Pki, Path], tuple[Path, Path]],
    reason: str,
) -> None:
    cert, key = write(pki, tmp_path)
    with pytest.raises(WeakCertificateError) as refused:
        server_context(cert, key, production=True)
    prefix = f"{cert}: refusing this certificate in production mode: "
    assert re.fullmatch(re.escape(prefix) + reason, str(refused.value))
    assert isinstance(refused.value, ValueError)


def test_production_names_every_weakness_at_once(tmp_path: Path) -> None:
    cert, key = _write_leaf(
        tmp_path, "bad", rsa.generate_private_key(65537, 1024), not_after=timedelta(days=-1)
    )
    with pytest.raises(WeakCertificateError) as refused:
        server_context(cert, key, production=True)
    reasons = str(refused.value).split(" production mode: ")[1]
    assert re.fullmatch(
        "it is self-signed; use a certificate issued by a certificate authority; "
        f"its RSA key has 1024 bits; at least 2048 are needed; it expired at {TIMESTAMP}",
        reasons,
    )


def test_production_refuses_a_file_that_is_not_a_certificate(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("hello")
    with pytest.raises(WeakCertificateError, match=re.escape(f"{bogus}: not a PEM certificate")):
        server_context(bogus, bogus, production=True)
