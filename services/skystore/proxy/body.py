"""Request payloads: aws-chunked decoding, digests checked as bytes pass, never buffered whole."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import AsyncIterator

from servicekit.errors import BadRequest, InvalidInput
from servicekit.sigv4 import STREAMING_PAYLOADS, UNSIGNED_PAYLOAD, SignedRequest, decode_aws_chunked
from services.skystore.proxy.checksums import declared_checksum
from services.skystore.proxy.s3api import S3Request

__all__ = ["Payload"]

MAX_SINGLE_PUT = 5 * 1024**3  # S3's limit of one PUT


class Payload:
    """The body of `request` as it arrives; `check()` after it is exhausted raises on a mismatch
    (BadDigest for Content-MD5 and x-amz-checksum-*, XAmzContentSHA256Mismatch, IncompleteBody)."""

    def __init__(
        self,
        stream: AsyncIterator[bytes],
        request: S3Request,
        signed: SignedRequest | None,
        key: bytes | None,
    ) -> None:
        headers = request.headers
        self.size = 0
        self._sha256 = hashlib.sha256()
        self._expected_md5 = _content_md5(headers.get("content-md5"))
        payload_hash = signed.payload_hash if signed else UNSIGNED_PAYLOAD
        self._expected_sha256 = None
        self.checksum = declared_checksum(headers)
        self._trailers: dict[str, str] = {}
        self._chunked = payload_hash in STREAMING_PAYLOADS
        if self._chunked:
            assert signed is not None
            stream = decode_aws_chunked(stream, signed=signed, key=key, trailers=self._trailers)
            declared = headers.get("x-amz-decoded-content-length")
        else:
            if payload_hash != UNSIGNED_PAYLOAD:
                self._expected_sha256 = payload_hash
            declared = headers.get("content-length")
        self.declared = int(declared) if declared and declared.isdigit() else None
        self._stream = stream
        # The MD5 is the ETag of a single-request write, which the store computes as well; it
        # is computed here only to check a Content-MD5 or for a body stored in parts.
        wanted = self._expected_md5 is not None or not self.in_one_request
        self._md5 = hashlib.md5(usedforsecurity=False) if wanted else None

    @property
    def in_one_request(self) -> bool:
        """Whether the body can be stored with one PUT (its length is known, within S3's limit)."""
        return self.declared is not None and self.declared <= MAX_SINGLE_PUT

    @property
    def plain(self) -> bool:
        """Whether the bytes on the wire are the object's (not aws-chunked)."""
        return not self._chunked

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            if chunk:
                self.digest(chunk)
                yield chunk

    def digest(self, piece: bytes | memoryview) -> None:
        """Count and digest the next piece of the body (done by `chunks()` as they pass)."""
        self.size += len(piece)
        if self._md5 is not None:
            self._md5.update(piece)
        if self._expected_sha256 is not None:
            self._sha256.update(piece)
        if self.checksum is not None:
            self.checksum.digest.update(piece)

    @property
    def md5_hex(self) -> str:
        assert self._md5 is not None, "the MD5 of a single-request body is the store's ETag"
        return self._md5.hexdigest()

    def check(self) -> None:
        if self.declared is not None and self.size != self.declared:
            raise BadRequest(
                f"the body has {self.size} bytes, {self.declared} were announced",
                code="IncompleteBody",
            )
        if self._md5 is not None and self._expected_md5 not in (None, self._md5.digest()):
            raise BadRequest(
                "The Content-MD5 you specified did not match what we received.",
                code="BadDigest",
            )
        if self._expected_sha256 is not None and self._sha256.hexdigest() != self._expected_sha256:
            raise BadRequest(
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
                code="XAmzContentSHA256Mismatch",
            )
        if self.checksum is not None:
            self.checksum.take_trailer(self._trailers)
            self.checksum.check()

    def checksum_headers(self) -> dict[str, str]:
        """The checksum header to answer (after `check()`), when the request declared one."""
        if self.checksum is None:
            return {}
        return {self.checksum.header: self.checksum.computed()}

    def stored_checksum(self) -> str | None:
        """The checksum as the locator keeps it: `<algorithm>:<base64>`."""
        if self.checksum is None:
            return None
        return f"{self.checksum.algorithm}:{self.checksum.computed()}"


def _content_md5(value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 16:
        raise InvalidInput("The Content-MD5 you specified was invalid.", code="InvalidDigest")
    return digest
