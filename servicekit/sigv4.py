"""AWS Signature Version 4 verification of S3-style requests: the Authorization header form,
the presigned query form, and `aws-chunked` streaming bodies (signed or not, with trailers).

    parse_signature(...)   -> SignedRequest | None   (None: an anonymous request)
    verify_signature(...)  -> the signing key, for the chunk signatures of a streaming body
    decode_aws_chunked(...) -> the payload bytes, chunk signatures checked on the way

Errors carry S3's codes (SignatureDoesNotMatch, AuthorizationHeaderMalformed, …), so an S3
front end answers them as they are.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote

from servicekit.errors import BadRequest, Forbidden

__all__ = [
    "ALGORITHM",
    "STREAMING_PAYLOADS",
    "UNSIGNED_PAYLOAD",
    "Credential",
    "SignedRequest",
    "decode_aws_chunked",
    "parse_signature",
    "sign_request",
    "signing_key",
    "verify_signature",
]

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
TRAILER_SIGNATURE = "x-amz-trailer-signature"
STREAMING_PAYLOADS = frozenset(
    {STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER}
)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_AMZ_DATE_FORM = re.compile(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z", re.ASCII)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SPACES = re.compile(r"\s+")
_MAX_CHUNK_LINE = 4096


@dataclass(frozen=True)
class Credential:
    key_id: str
    date: str  # YYYYMMDD
    region: str
    service: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"

    @classmethod
    def parse(cls, value: str, error: type[BadRequest] = BadRequest) -> Credential:
        parts = value.split("/")
        if len(parts) != 5 or parts[4] != "aws4_request" or not all(parts):
            raise BadRequest(
                f"credential {value!r} is not <key id>/<date>/<region>/<service>/aws4_request",
                code="AuthorizationHeaderMalformed",
            )
        return cls(*parts[:4])


@dataclass(frozen=True)
class SignedRequest:
    credential: Credential
    amz_date: str
    signed_headers: tuple[str, ...]
    signature: str
    payload_hash: str  # hex SHA-256, UNSIGNED-PAYLOAD or a STREAMING-… marker
    presigned: bool
    expires: int | None = None

    @property
    def key_id(self) -> str:
        return self.credential.key_id

    @property
    def timestamp(self) -> datetime:
        return _parse_amz_date(self.amz_date)


def _parse_amz_date(value: str) -> datetime:
    """YYYYMMDDTHHMMSSZ as an aware datetime, else ValueError (strptime costs ~10x more, on
    every signed request)."""
    match = _AMZ_DATE_FORM.fullmatch(value)
    if match is None:
        raise ValueError(f"{value!r} is not YYYYMMDDTHHMMSSZ")
    year, month, day, hour, minute, second = map(int, match.groups())
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def _malformed(message: str, *, query: bool = False) -> BadRequest:
    code = "AuthorizationQueryParametersError" if query else "AuthorizationHeaderMalformed"
    return BadRequest(message, code=code)


def _check_amz_date(value: str, *, query: bool) -> str:
    try:
        _parse_amz_date(value)
    except ValueError:
        raise _malformed(f"X-Amz-Date {value!r} is not YYYYMMDDTHHMMSSZ", query=query) from None
    return value


def _header_date(headers: Mapping[str, str]) -> str:
    if value := headers.get("x-amz-date"):
        return _check_amz_date(value, query=False)
    if value := headers.get("date"):
        try:
            return parsedate_to_datetime(value).astimezone(UTC).strftime(_AMZ_DATE)
        except (TypeError, ValueError):
            raise _malformed(f"Date header {value!r} cannot be parsed") from None
    raise Forbidden("the request has no X-Amz-Date or Date header", code="AccessDenied")


def _parse_header(authorization: str, headers: Mapping[str, str]) -> SignedRequest:
    algorithm, _, rest = authorization.partition(" ")
    if algorithm != ALGORITHM:
        raise _malformed(
            f"unsupported authorization {algorithm!r}: only {ALGORITHM} (SigV4) is accepted"
        )
    fields: dict[str, str] = {}
    for item in rest.split(","):
        name, _, value = item.strip().partition("=")
        fields[name] = value
    missing = [n for n in ("Credential", "SignedHeaders", "Signature") if not fields.get(n)]
    if missing:
        raise _malformed(f"the Authorization header lacks {', '.join(missing)}")
    payload_hash = headers.get("x-amz-content-sha256", "")
    if not payload_hash:
        raise BadRequest("the request has no x-amz-content-sha256 header", code="InvalidRequest")
    special = payload_hash in STREAMING_PAYLOADS or payload_hash == UNSIGNED_PAYLOAD
    if not special and not _HEX64.fullmatch(payload_hash):
        raise BadRequest(
            f"x-amz-content-sha256 {payload_hash!r} is not a SHA-256 hex digest",
            code="InvalidArgument",
        )
    return SignedRequest(
        credential=Credential.parse(fields["Credential"]),
        amz_date=_header_date(headers),
        signed_headers=tuple(fields["SignedHeaders"].split(";")),
        signature=fields["Signature"],
        payload_hash=payload_hash,
        presigned=False,
    )


def _parse_query(query: Mapping[str, str]) -> SignedRequest:
    if query.get("X-Amz-Algorithm") != ALGORITHM:
        raise _malformed(f"X-Amz-Algorithm must be {ALGORITHM}", query=True)
    needed = ("X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders")
    missing = [n for n in (*needed, "X-Amz-Signature") if not query.get(n)]
    if missing:
        raise _malformed(f"the presigned URL lacks {', '.join(missing)}", query=True)
    expires = query["X-Amz-Expires"]
    if not expires.isdigit() or not 1 <= int(expires) <= MAX_PRESIGN_SECONDS:
        raise _malformed(
            f"X-Amz-Expires must be between 1 and {MAX_PRESIGN_SECONDS} seconds", query=True
        )
    return SignedRequest(
        credential=Credential.parse(query["X-Amz-Credential"]),
        amz_date=_check_amz_date(query["X-Amz-Date"], query=True),
        signed_headers=tuple(query["X-Amz-SignedHeaders"].split(";")),
        signature=query["X-Amz-Signature"],
        payload_hash=UNSIGNED_PAYLOAD,
        presigned=True,
        expires=int(expires),
    )


def parse_signature(headers: Mapping[str, str], query: Mapping[str, str]) -> SignedRequest | None:
    """The request's SigV4 signature (header or query form), None when it carries none.

    `headers` has lower-case names; `query` maps each decoded parameter to its value.
    """
    if authorization := headers.get("authorization"):
        return _parse_header(authorization, headers)
    if "X-Amz-Signature" in query or "X-Amz-Algorithm" in query:
        return _parse_query(query)
    return None


def _encode(value: str) -> str:
    return quote(value, safe="-_.~")


def canonical_query(pairs: Sequence[tuple[str, str]], *, presigned: bool) -> str:
    encoded = sorted(
        (_encode(k), _encode(v)) for k, v in pairs if not (presigned and k == "X-Amz-Signature")
    )
    return "&".join(f"{k}={v}" for k, v in encoded)


def _canonical_headers(
    raw_headers: Sequence[tuple[str, str]], signed: Sequence[str], *, query: bool
) -> str:
    values: dict[str, list[str]] = {}
    for name, value in raw_headers:
        values.setdefault(name.lower(), []).append(_SPACES.sub(" ", value.strip()))
    lines = []
    for name in signed:
        if name not in values:
            raise _malformed(f"signed header {name!r} is not in the request", query=query)
        lines.append(f"{name}:{','.join(values[name])}\n")
    return "".join(lines)


@functools.lru_cache(maxsize=1024)
def signing_key(secret: str, credential: Credential) -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (credential.date, credential.region, credential.service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _sign(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def _string_to_sign(signed: SignedRequest, canonical_request: str) -> str:
    digest = hashlib.sha256(canonical_request.encode()).hexdigest()
    return f"{ALGORITHM}\n{signed.amz_date}\n{signed.credential.scope}\n{digest}"


def sign_request(
    *,
    method: str,
    path: str,
    query_pairs: Sequence[tuple[str, str]] = (),
    headers: Mapping[str, str],
    payload_hash: str,
    access_key: str,
    secret: str,
    region: str,
    now: datetime,
    service: str = "s3",
) -> dict[str, str]:
    """The headers that sign an outgoing request (x-amz-date, x-amz-content-sha256,
    authorization); `path` is the URI-encoded path as sent, `headers` must include host."""
    amz_date = now.astimezone(UTC).strftime(_AMZ_DATE)
    credential = Credential(access_key, amz_date[:8], region, service)
    added = {"x-amz-date": amz_date, "x-amz-content-sha256": payload_hash}
    every = {name.lower(): value for name, value in headers.items()} | added
    names = tuple(sorted(every))
    signed = SignedRequest(credential, amz_date, names, "", payload_hash, presigned=False)
    canonical = "\n".join(
        [
            method,
            path,
            canonical_query(query_pairs, presigned=False),
            _canonical_headers(list(every.items()), names, query=False),
            ";".join(names),
            payload_hash,
        ]
    )
    signature = _sign(signing_key(secret, credential), _string_to_sign(signed, canonical))
    added["authorization"] = (
        f"{ALGORITHM} Credential={access_key}/{credential.scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return added


def _candidate_paths(raw_path: str) -> list[str]:
    # Clients sign the path URI-encoded once; most send it encoded that same way, some encode
    # characters the canonical form leaves (or leave ones it encodes). Try both readings.
    normalised = quote(unquote(raw_path), safe="/~")
    return [raw_path] if normalised == raw_path else [normalised, raw_path]


def verify_signature(
    signed: SignedRequest,
    *,
    secret: str,
    method: str,
    raw_path: str,
    query_pairs: Sequence[tuple[str, str]],
    raw_headers: Sequence[tuple[str, str]],
    now: datetime,
    max_skew: timedelta = timedelta(minutes=15),
) -> bytes:
    """Check the signature with the key's `secret`; returns the signing key.

    Raises Forbidden with S3's code: SignatureDoesNotMatch, RequestTimeTooSkewed, or
    AccessDenied for an expired presigned URL.
    """
    if "host" not in signed.signed_headers:
        raise _malformed("the signature must cover the Host header", query=signed.presigned)
    if signed.presigned:
        assert signed.expires is not None
        if now > signed.timestamp + timedelta(seconds=signed.expires):
            raise Forbidden("Request has expired", code="AccessDenied")
        if signed.timestamp - now > max_skew:
            raise Forbidden("Request is not valid yet", code="AccessDenied")
    elif abs(now - signed.timestamp) > max_skew:
        raise Forbidden(
            "The difference between the request time and the current time is too large.",
            code="RequestTimeTooSkewed",
        )
    headers = _canonical_headers(raw_headers, signed.signed_headers, query=signed.presigned)
    query = canonical_query(query_pairs, presigned=signed.presigned)
    key = signing_key(secret, signed.credential)
    for path in _candidate_paths(raw_path):
        canonical = "\n".join(
            [
                method,
                path,
                query,
                headers,
                ";".join(signed.signed_headers),
                signed.payload_hash,
            ]
        )
        if hmac.compare_digest(_sign(key, _string_to_sign(signed, canonical)), signed.signature):
            return key
    raise Forbidden(
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
        code="SignatureDoesNotMatch",
    )


def _chunk_mismatch() -> Forbidden:
    return Forbidden(
        "a chunk signature of the streaming body does not match", code="SignatureDoesNotMatch"
    )


def _incomplete(message: str) -> BadRequest:
    return BadRequest(f"malformed aws-chunked body: {message}", code="IncompleteBody")


class _Reader:
    def __init__(self, stream: AsyncIterator[bytes]) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def _fill(self) -> bool:
        chunk = await anext(self._stream, None)
        if chunk is None:
            return False
        self._buffer += chunk
        return True

    async def line(self) -> bytes:
        while (end := self._buffer.find(b"\r\n")) < 0:
            if len(self._buffer) > _MAX_CHUNK_LINE or not await self._fill():
                raise _incomplete("a chunk header line does not end")
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        return line

    async def some(self, limit: int) -> bytes:
        if not self._buffer and not await self._fill():
            raise _incomplete("the body ends inside a chunk")
        data = bytes(self._buffer[:limit])
        del self._buffer[:limit]
        return data


async def decode_aws_chunked(
    stream: AsyncIterator[bytes],
    *,
    signed: SignedRequest,
    key: bytes | None,
    trailers: dict[str, str] | None = None,
) -> AsyncIterator[bytes]:
    """The payload of an `aws-chunked` body, verifying each chunk signature when it is signed,
    and the trailer's signature when the trailer is signed; trailing headers (checksums) go
    into `trailers`, names lower-cased.

    Data is passed on as it arrives; a bad chunk signature raises at the end of its chunk, so
    the caller must not commit what it wrote until the stream is exhausted.
    """
    verify = signed.payload_hash != STREAMING_UNSIGNED_TRAILER
    if verify and key is None:
        raise ValueError("a signed aws-chunked body needs the signing key")
    previous = signed.signature
    reader = _Reader(stream)
    while True:
        header = (await reader.line()).decode("latin-1")
        size_text, _, extension = header.partition(";")
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _incomplete(f"chunk size {size_text!r} is not hexadecimal") from None
        digest = hashlib.sha256()
        left = size
        while left:
            data = await reader.some(left)
            left -= len(data)
            digest.update(data)
            yield data
        if verify:
            name, _, claimed = extension.partition("=")
            if name.strip() != "chunk-signature":
                raise _incomplete("a chunk has no chunk-signature")
            text = "\n".join(
                [
                    "AWS4-HMAC-SHA256-PAYLOAD",
                    signed.amz_date,
                    signed.credential.scope,
                    previous,
                    EMPTY_SHA256,
                    digest.hexdigest(),
                ]
            )
            expected = _sign(key, text)  # type: ignore[arg-type]
            if not hmac.compare_digest(expected, claimed.strip()):
                raise _chunk_mismatch()
            previous = expected
        if size == 0:
            break
        if await reader.line() != b"":
            raise _incomplete("chunk data is not followed by CRLF")
    received = await _trailer_lines(reader)
    if signed.payload_hash == STREAMING_SIGNED_TRAILER:
        _check_trailer_signature(received, signed, key, previous)  # type: ignore[arg-type]
    if trailers is not None:
        trailers.update(received)


async def _trailer_lines(reader: _Reader) -> dict[str, str]:
    """The trailing headers, up to the empty line that ends the body."""
    received: dict[str, str] = {}
    while True:
        try:
            line = await reader.line()
        except BadRequest:
            return received  # some clients end right after the last chunk
        if not line:
            return received
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon:
            raise _incomplete(f"trailer line {line[:40]!r} is not name:value")
        received[name.strip().lower()] = value.strip()


def _check_trailer_signature(
    received: dict[str, str], signed: SignedRequest, key: bytes, previous: str
) -> None:
    claimed = received.pop(TRAILER_SIGNATURE, None)
    if claimed is None:
        raise _incomplete(f"a signed trailer has no {TRAILER_SIGNATURE}")
    canonical = "".join(f"{name}:{received[name]}\n" for name in sorted(received))
    text = "\n".join(
        [
            "AWS4-HMAC-SHA256-TRAILER",
            signed.amz_date,
            signed.credential.scope,
            previous,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    if not hmac.compare_digest(_sign(key, text), claimed):
        raise Forbidden(
            "the trailer signature of the streaming body does not match",
            code="SignatureDoesNotMatch",
        )
