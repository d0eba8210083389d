"""SigV4 verification against botocore's own signer, presigned URLs and aws-chunked bodies."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

import botocore.auth
import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from servicekit.errors import BadRequest, Forbidden
from servicekit.sigv4 import (
    EMPTY_SHA256,
    STREAMING_SIGNED,
    decode_aws_chunked,
    parse_signature,
    signing_key,
    verify_signature,
)

KEY, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore signs at NOW, whatever the time is."""
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: NOW.replace(tzinfo=None))


def _signed(
    url: str, *, method: str = "GET", body: bytes = b"", query: bool = False, expires: int = 60
):
    request = AWSRequest(method=method, url=url, data=body)
    credentials = Credentials(KEY, SECRET)
    signer = (
        S3SigV4QueryAuth(credentials, "s3", "us-east-1", expires=expires)
        if query
        else S3SigV4Auth(credentials, "s3", "us-east-1")
    )
    signer.add_auth(request)
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    headers = [(k.lower(), v) for k, v in prepared.headers.items()]
    headers.append(("host", parts.netloc))
    return parts, headers


def _verify(
    parts, headers, *, method: str = "GET", secret: str = SECRET, now: datetime = NOW
) -> bytes:
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    signed = parse_signature(dict(headers), dict(pairs))
    assert signed is not None
    return verify_signature(
        signed,
        secret=secret,
        method=method,
        raw_path=parts.path,
        query_pairs=pairs,
        raw_headers=headers,
        now=now,
    )


def test_botocore_header_signature_verifies() -> None:
    parts, headers = _signed("http://127.0.0.1:8110/bucket/a%20key/%C3%A9?list-type=2&prefix=x")
    assert _verify(parts, headers)


def test_wrong_secret_is_signature_does_not_match() -> None:
    parts, headers = _signed("http://127.0.0.1:8110/bucket/key")
    with pytest.raises(Forbidden) as refused:
        _verify(parts, headers, secret="other")
    assert refused.value.code == "SignatureDoesNotMatch"


def test_changed_query_breaks_the_signature() -> None:
    parts, headers = _signed("http://127.0.0.1:8110/bucket?prefix=a")
    with pytest.raises(Forbidden):
        _verify(parts._replace(query="prefix=b"), headers)


def test_skewed_clock_is_refused() -> None:
    parts, headers = _signed("http://127.0.0.1:8110/bucket/key")
    with pytest.raises(Forbidden) as refused:
        _verify(parts, headers, now=NOW + timedelta(hours=1))
    assert refused.value.code == "RequestTimeTooSkewed"


def test_presigned_url_verifies_until_it_expires() -> None:
    parts, headers = _signed("http://127.0.0.1:8110/bucket/key", query=True, expires=60)
    headers = [h for h in headers if h[0] == "host"]
    assert _verify(parts, headers, now=NOW + timedelta(seconds=59))
    with pytest.raises(Forbidden) as expired:
        _verify(parts, headers, now=NOW + timedelta(seconds=61))
    assert expired.value.code == "AccessDenied"
    assert "expired" in expired.value.message


def test_no_signature_is_anonymous() -> None:
    assert parse_signature({"host": "x"}, {}) is None


def test_sigv2_is_refused_as_malformed() -> None:
    with pytest.raises(BadRequest) as malformed:
        parse_signature({"authorization": "AWS AKID:sig"}, {})
    assert malformed.value.code == "AuthorizationHeaderMalformed"


@pytest.mark.parametrize(
    "amz_date", ["20261322T080000Z", "2026112T080000Z", "20261122T080000", "20261122 080000Z"]
)
def test_a_malformed_amz_date_is_refused(amz_date: str) -> None:
    _, headers = _signed("http://s3.local/bucket/key")
    headers = [(k, amz_date if k == "x-amz-date" else v) for k, v in headers]
    with pytest.raises(BadRequest) as malformed:
        parse_signature(dict(headers), {})
    assert malformed.value.code == "AuthorizationHeaderMalformed"
    assert "YYYYMMDDTHHMMSSZ" in malformed.value.message


def test_the_signature_time_is_read_from_x_amz_date() -> None:
    _, headers = _signed("http://s3.local/bucket/key")
    signed = parse_signature(dict(headers), {})
    assert signed is not None
    assert signed.timestamp == NOW


def _chunked(
    payload_chunks: list[bytes], key: bytes, seed: str, amz_date: str, scope: str
) -> bytes:
    out, previous = b"", seed
    for data in [*payload_chunks, b""]:
        text = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                amz_date,
                scope,
                previous,
                EMPTY_SHA256,
                hashlib.sha256(data).hexdigest(),
            ]
        )
        signature = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
        out += f"{len(data):x};chunk-signature={signature}\r\n".encode() + data + b"\r\n"
        previous = signature
    return out


async def _stream(body: bytes, piece: int = 7) -> AsyncIterator[bytes]:
    for i in range(0, len(body), piece):
        yield body[i : i + piece]


async def _decode(body: bytes, tamper: bool = False) -> bytes:
    headers = {
        "authorization": f"AWS4-HMAC-SHA256 Credential={KEY}/20261122/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=" + "ab" * 32,
        "x-amz-content-sha256": STREAMING_SIGNED,
        "x-amz-date": "20261122T080000Z",
    }
    signed = parse_signature(headers, {})
    assert signed is not None
    key = signing_key(SECRET, signed.credential)
    encoded = _chunked(
        [body[:10], body[10:]], key, signed.signature, signed.amz_date, signed.credential.scope
    )
    if tamper:
        encoded = encoded.replace(b"hello", b"HELLO")
    return b"".join([c async for c in decode_aws_chunked(_stream(encoded), signed=signed, key=key)])


async def test_signed_chunks_decode_to_the_payload() -> None:
    assert await _decode(b"hello world, in two chunks") == b"hello world, in two chunks"


async def test_tampered_chunk_fails_its_signature() -> None:
    with pytest.raises(Forbidden) as refused:
        await _decode(b"hello world, in two chunks", tamper=True)
    assert refused.value.code == "SignatureDoesNotMatch"


async def test_unsigned_trailer_chunks_decode_without_signatures() -> None:
    headers = {
        "authorization": f"AWS4-HMAC-SHA256 Credential={KEY}/20261122/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=" + "ab" * 32,
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "x-amz-date": "20261122T080000Z",
    }
    signed = parse_signature(headers, {})
    assert signed is not None
    body = b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:DUoRhQ==\r\n\r\n"
    trailers: dict[str, str] = {}
    decoded = [
        c
        async for c in decode_aws_chunked(_stream(body), signed=signed, key=None, trailers=trailers)
    ]
    assert b"".join(decoded) == b"hello world"
    assert trailers == {"x-amz-checksum-crc32": "DUoRhQ=="}


async def _decode_signed_trailer(trailer_value: str, *, tamper: bool = False) -> dict[str, str]:
    headers = {
        "authorization": f"AWS4-HMAC-SHA256 Credential={KEY}/20261122/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=" + "cd" * 32,
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
        "x-amz-date": "20261122T080000Z",
    }
    signed = parse_signature(headers, {})
    assert signed is not None
    key = signing_key(SECRET, signed.credential)
    body = _chunked(
        [b"hello world"], key, signed.signature, signed.amz_date, signed.credential.scope
    )
    last = body.rsplit(b"chunk-signature=", 1)[1].split(b"\r\n", 1)[0].decode()
    canonical = f"x-amz-checksum-crc32:{trailer_value}\n"
    text = "\n".join(
        [
            "AWS4-HMAC-SHA256-TRAILER",
            signed.amz_date,
            signed.credential.scope,
            last,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    signature = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
    sent = "AAAAAA==" if tamper else trailer_value
    body = body[: -len(b"\r\n")]  # the last chunk's CRLF: the trailer follows
    body += f"x-amz-checksum-crc32:{sent}\r\nx-amz-trailer-signature:{signature}\r\n\r\n".encode()
    trailers: dict[str, str] = {}
    decoded = [
        c
        async for c in decode_aws_chunked(_stream(body), signed=signed, key=key, trailers=trailers)
    ]
    assert b"".join(decoded) == b"hello world"
    return trailers


async def test_a_signed_trailer_is_verified_and_handed_over() -> None:
    assert await _decode_signed_trailer("DUoRhQ==") == {"x-amz-checksum-crc32": "DUoRhQ=="}
    with pytest.raises(Forbidden) as tampered:
        await _decode_signed_trailer("DUoRhQ==", tamper=True)
    assert tampered.value.code == "SignatureDoesNotMatch"


async def test_truncated_chunked_body_is_incomplete() -> None:
    headers = {
        "authorization": f"AWS4-HMAC-SHA256 Credential={KEY}/20261122/us-east-1/s3/aws4_request, "
        "SignedHeaders=host, Signature=" + "ab" * 32,
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "x-amz-date": "20261122T080000Z",
    }
    signed = parse_signature(headers, {})
    assert signed is not None
    with pytest.raises(BadRequest) as incomplete:
        [c async for c in decode_aws_chunked(_stream(b"10\r\nshort"), signed=signed, key=None)]
    assert incomplete.value.code == "IncompleteBody"
