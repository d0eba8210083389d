"""Signing keys, key ids and JWK sets (security/keys.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import ssl
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from servicekit.errors import Unauthorized
from servicekit.security import (
    JWKSet,
    LocalCA,
    SigningKey,
    client_context,
    load_or_create_signing_key,
    server_context,
    write_jwks,
)


@contextmanager
def serving(body: bytes, *, status: int = 200, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """A real HTTP(S) server on a free port answering every GET with `body`."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        scheme = "https" if tls is not None else "http"
        yield f"{scheme}://localhost:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_generated_key_id_is_the_rfc7638_thumbprint() -> None:
    key = SigningKey.generate()
    numbers = key.public_key.public_numbers()
    x = _b64url(numbers.x.to_bytes(32, "big"))
    y = _b64url(numbers.y.to_bytes(32, "big"))
    canonical = f'{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}'
    assert key.kid == _b64url(hashlib.sha256(canonical.encode()).digest())


def test_an_explicit_key_id_is_kept() -> None:
    assert SigningKey.generate("gateway-2026").kid == "gateway-2026"


def test_an_empty_key_id_is_refused() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        SigningKey.generate("")


def test_pem_round_trip_keeps_the_key_and_its_thumbprint() -> None:
    key = SigningKey.generate()
    pem = key.to_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8, unencrypted
    again = SigningKey.from_pem(pem)
    assert again.kid == key.kid
    assert again.private_key.private_numbers() == key.private_key.private_numbers()


@pytest.mark.parametrize(
    ("private_key", "reason"),
    [
        (rsa.generate_private_key(65537, 2048), "RSAPrivateKey"),
        (ec.generate_private_key(ec.SECP384R1()), "secp384r1"),
    ],
    ids=["rsa", "p384"],
)
def test_from_pem_refuses_keys_other_than_p256(private_key: object, reason: str) -> None:
    pem = private_key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match=reason):
        SigningKey.from_pem(pem)


def test_from_pem_refuses_an_encrypted_key() -> None:
    pem = SigningKey.generate().private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(ValueError, match="not an unencrypted PEM private key"):
        SigningKey.from_pem(pem)


def test_public_jwk_names_the_key_and_holds_no_private_part() -> None:
    key = SigningKey.generate("k1")
    jwk = key.public_jwk()
    assert set(jwk) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
    assert (jwk["kty"], jwk["crv"], jwk["kid"], jwk["alg"], jwk["use"]) == (
        "EC",
        "P-256",
        "k1",
        "ES256",
        "sig",
    )


def test_jwk_set_json_round_trip_gives_the_same_public_keys() -> None:
    first, second = SigningKey.generate(), SigningKey.generate("second")
    jwks = JWKSet.from_json(JWKSet.of(first, second).to_json())
    assert jwks.kids == {first.kid, "second"}
    assert jwks.key_for(first.kid).public_numbers() == first.public_key.public_numbers()
    assert jwks.key_for("second").public_numbers() == second.public_key.public_numbers()


def test_key_for_an_unknown_kid_is_unauthorized() -> None:
    jwks = JWKSet.of(SigningKey.generate("known"))
    with pytest.raises(Unauthorized, match="unknown key id 'other'") as refused:
        jwks.key_for("other")
    assert refused.value.status == 401


def _rsa_jwk() -> dict[str, str]:
    jwk = RSAAlgorithm.to_jwk(rsa.generate_private_key(65537, 2048).public_key(), as_dict=True)
    return {**jwk, "kid": "rsa"}


def _p384_jwk() -> dict[str, str]:
    jwk = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key(), as_dict=True)
    return {**jwk, "kid": "p384"}


def _private_jwk() -> dict[str, str]:
    jwk = ECAlgorithm.to_jwk(SigningKey.generate().private_key, as_dict=True)
    return {**jwk, "kid": "leaky"}


def _off_curve_jwk() -> dict[str, str]:
    jwk = SigningKey.generate("bent").public_jwk()
    return {**jwk, "y": jwk["x"]}


@pytest.mark.parametrize(
    ("jwk", "reason"),
    [
        (_rsa_jwk(), "only EC P-256 keys are accepted"),
        (_p384_jwk(), "only EC P-256 keys are accepted"),
        (_private_jwk(), "contains a private key"),
        (_off_curve_jwk(), "not a valid P-256 public key"),
        ({**SigningKey.generate().public_jwk(), "alg": "ES384"}, "expected alg='ES256'"),
        ({**SigningKey.generate().public_jwk(), "use": "enc"}, "use='sig'"),
        ({k: v for k, v in SigningKey.generate().public_jwk().items() if k != "kid"}, "no 'kid'"),
        ("not an object", "must be a JSON object"),
    ],
    ids=["rsa", "p384", "private", "off-curve", "alg", "use", "no-kid", "not-object"],
)
def test_jwk_set_refuses_anything_but_public_p256_signing_keys(jwk: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        JWKSet.from_json(json.dumps({"keys": [jwk]}))


def test_jwk_set_refuses_a_key_id_named_twice() -> None:
    with pytest.raises(ValueError, match="names key id 'twin' twice"):
        JWKSet.of(SigningKey.generate("twin"), SigningKey.generate("twin"))


@pytest.mark.parametrize("text", ["{not json", "[]", '{"keys": {}}'])
def test_jwk_set_refuses_a_document_that_is_not_a_set(text: str) -> None:
    with pytest.raises(ValueError, match="JWK set"):
        JWKSet.from_json(text)


def test_load_reads_a_file_written_by_write_jwks(tmp_path: Path) -> None:
    keys = [SigningKey.generate(), SigningKey.generate()]
    path = tmp_path / "keys" / "jwks.json"
    write_jwks(path, keys)
    assert JWKSet.load(str(path)).kids == {key.kid for key in keys}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_load_names_the_file_of_a_bad_set(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [_rsa_jwk()]}))
    with pytest.raises(ValueError, match=re.escape(f"{path}: JWK 'rsa'")):
        JWKSet.load(str(path))


def test_load_fetches_an_http_url() -> None:
    key = SigningKey.generate()
    with serving(JWKSet.of(key).to_json().encode()) as url:
        assert JWKSet.load(url).kids == {key.kid}


def test_load_fetches_an_https_url_trusting_the_local_ca(tmp_path: Path) -> None:
    ca = LocalCA.load_or_create(tmp_path / "ca")
    cert, cert_key = ca.issue_server_certificate(["localhost"], tmp_path, "jwks")
    key = SigningKey.generate()
    with serving(JWKSet.of(key).to_json().encode(), tls=server_context(cert, cert_key)) as url:
        assert JWKSet.load(url, verify=client_context(ca.cert_path)).kids == {key.kid}


def test_load_turns_an_http_error_into_os_error() -> None:
    with serving(b"gone", status=404) as url, pytest.raises(OSError, match="cannot fetch"):
        JWKSet.load(url)


def test_load_turns_an_unreachable_url_into_os_error() -> None:
    with serving(b"") as url:
        pass  # the server is gone now: its port refuses connections
    with pytest.raises(OSError, match=re.escape(f"cannot fetch JWK set from {url}")):
        JWKSet.load(url, timeout=2)


def test_load_or_create_signing_key_creates_a_private_file_once(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "identity.key.pem"
    created = load_or_create_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    pem = path.read_bytes()
    reused = load_or_create_signing_key(path)
    assert reused.kid == created.kid
    assert path.read_bytes() == pem
    assert [p.name for p in path.parent.iterdir()] == ["identity.key.pem"]  # no temp left


def test_load_or_create_signing_key_uses_an_existing_key(tmp_path: Path) -> None:
    path = tmp_path / "identity.key.pem"
    existing = SigningKey.generate()
    path.write_bytes(existing.to_pem())
    assert load_or_create_signing_key(path).kid == existing.kid


def test_load_or_create_signing_key_from_many_threads_agrees_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "identity.key.pem"
    kids: list[str] = []
    threads = [
        threading.Thread(target=lambda: kids.append(load_or_create_signing_key(path).kid))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(kids) == {SigningKey.from_pem(path.read_bytes()).kid}
