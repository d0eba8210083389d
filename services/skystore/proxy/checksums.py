"""S3's additional checksums (`x-amz-checksum-<algorithm>`): what a request declares, in a
header or in the aws-chunked trailer, computed as the bytes pass and compared at the end."""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from awscrt import checksums as crt

from servicekit.errors import BadRequest, InvalidInput

__all__ = ["Checksum", "Digest", "declared_checksum", "response_header"]

PREFIX = "x-amz-checksum-"


class Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def digest(self) -> bytes: ...


class _Crc:
    def __init__(self, step: Callable[[bytes, int], int], width: int) -> None:
        self._step = step
        self._width = width
        self._value = 0

    def update(self, data: bytes, /) -> None:
        self._value = self._step(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(self._width, "big")


_ALGORITHMS: dict[str, tuple[Callable[[], Digest], int]] = {
    "crc32": (lambda: _Crc(zlib.crc32, 4), 4),
    "crc32c": (lambda: _Crc(crt.crc32c, 4), 4),
    "crc64nvme": (lambda: _Crc(crt.crc64nvme, 8), 8),
    "sha1": (lambda: hashlib.sha1(usedforsecurity=False), 20),
    "sha256": (hashlib.sha256, 32),
}


@dataclass
class Checksum:
    """The checksum a request declared: `expected` is None while it is still to come in the
    trailer, or when only the algorithm was named (then it is computed and kept)."""

    algorithm: str
    expected: str | None
    in_trailer: bool
    digest: Digest

    @property
    def header(self) -> str:
        return PREFIX + self.algorithm

    def computed(self) -> str:
        return base64.b64encode(self.digest.digest()).decode()

    def take_trailer(self, trailers: Mapping[str, str]) -> None:
        if not self.in_trailer:
            return
        value = trailers.get(self.header)
        if value is None:
            raise InvalidInput(
                f"x-amz-trailer names {self.header}, but the body's trailer does not carry it",
                code="MalformedTrailerError",
            )
        self.expected = _valid(self.algorithm, value, self.header)

    def check(self) -> None:
        if self.expected is not None and self.expected != self.computed():
            raise BadRequest(
                f"The {self.algorithm.upper()} you specified did not match the calculated "
                "checksum.",
                code="BadDigest",
            )


def declared_checksum(headers: Mapping[str, str]) -> Checksum | None:
    """The checksum `headers` declare (value header, trailer, or the SDK's algorithm alone)."""
    valued = [name for name in headers if name.removeprefix(PREFIX) in _ALGORITHMS]
    trailer = headers.get("x-amz-trailer", "").strip().lower()
    named = headers.get("x-amz-sdk-checksum-algorithm", "").strip().lower()
    if len(valued) + bool(trailer) > 1:
        raise InvalidInput(
            "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.",
            code="InvalidRequest",
        )
    if valued:
        algorithm = valued[0].removeprefix(PREFIX)
        expected = _valid(algorithm, headers[valued[0]], valued[0])
        return Checksum(algorithm, expected, False, _ALGORITHMS[algorithm][0]())
    if trailer:
        return Checksum(_algorithm(trailer.removeprefix(PREFIX)), None, True, _new(trailer))
    if named:
        return Checksum(_algorithm(named), None, False, _new(PREFIX + named))
    return None


def response_header(stored: str | None) -> dict[str, str]:
    """The `x-amz-checksum-*` header of a checksum kept as `<algorithm>:<base64>`."""
    if not stored:
        return {}
    algorithm, _, value = stored.partition(":")
    return {PREFIX + algorithm: value}


def _algorithm(name: str) -> str:
    if name not in _ALGORITHMS:
        raise InvalidInput(
            "Checksum algorithm provided is unsupported. Please try again with any of the "
            "valid types: [CRC32, CRC32C, CRC64NVME, SHA1, SHA256]",
            code="InvalidRequest",
        )
    return name


def _new(header: str) -> Digest:
    return _ALGORITHMS[_algorithm(header.removeprefix(PREFIX))][0]()


def _valid(algorithm: str, value: str, header: str) -> str:
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != _ALGORITHMS[algorithm][1]:
        raise InvalidInput(f"Value for {header} header is invalid.", code="InvalidRequest")
    return value.strip()
