"""Content hashes for integrity checks: named algorithms, check-value files, hash-while-reading."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import Protocol

import blake3

from servicekit.errors import InvalidInput

HASH_ALGORITHMS: tuple[str, ...] = ("sha256", "sha512", "blake3")

_HEX_LENGTHS = {"sha256": 64, "sha512": 128, "blake3": 64}

# sha256sum prints "<hex>  name" (text mode) or "<hex> *name" (binary mode); a bare "<hex>" is
# what people write by hand.
_CHECK_LINE = re.compile(r"(?P<hex>[0-9A-Fa-f]+)(?:(?: \*| {2})(?P<name>.+))?")


class Hasher(Protocol):
    def update(self, data: bytes, /) -> object: ...

    def hexdigest(self) -> str: ...


def _known(algorithm: str) -> str:
    if algorithm not in _HEX_LENGTHS:
        raise InvalidInput(
            f"unknown hash algorithm {algorithm!r}; use one of {', '.join(HASH_ALGORITHMS)}",
            detail={"algorithm": algorithm, "allowed": list(HASH_ALGORITHMS)},
        )
    return algorithm


def new_hasher(name: str) -> Hasher:
    """A fresh hasher for `name`, one of HASH_ALGORITHMS."""
    if _known(name) == "blake3":
        return blake3.blake3()
    return hashlib.new(name)


def check_value_name(object_key: str, algorithm: str) -> str:
    """The key of the file holding `object_key`'s check value: `model.onnx.sha256asc`."""
    return f"{object_key}.{_known(algorithm)}asc"


def parse_check_value(text: str, algorithm: str) -> str:
    """The lower-case hex digest in a check-value file (`<hex>`, `<hex>  name`, `<hex> *name`)."""
    expected_length = _HEX_LENGTHS[_known(algorithm)]
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise InvalidInput(
            f"{algorithm} check value: expected one line, found {len(lines)}",
            detail={"algorithm": algorithm, "lines": len(lines)},
        )
    match = _CHECK_LINE.fullmatch(lines[0].strip())
    if match is None:
        raise InvalidInput(
            f"{algorithm} check value: expected '<hex>', '<hex>  filename' or '<hex> *filename',"
            f" got {lines[0][:80]!r}",
            detail={"algorithm": algorithm},
        )
    digest = match["hex"].lower()
    if len(digest) != expected_length:
        raise InvalidInput(
            f"{algorithm} check value: expected {expected_length} hex digits, got {len(digest)}",
            detail={"algorithm": algorithm, "expected": expected_length, "got": len(digest)},
        )
    return digest


class HashingReader:
    """Passes byte chunks through unchanged while hashing and counting them.

    A consumer streams the content (to disk, to S3, to a model loader) and verifies it in the
    same read: iterate the reader, then ask for `digests()`.
    """

    def __init__(self, chunks: AsyncIterable[bytes], algorithms: Sequence[str]) -> None:
        if not algorithms:
            raise InvalidInput(f"no hash algorithm given; use one of {', '.join(HASH_ALGORITHMS)}")
        self._chunks = chunks
        self._hashers = {name: new_hasher(name) for name in algorithms}
        self._exhausted = False
        self.size = 0

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._read()

    async def _read(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            for hasher in self._hashers.values():
                hasher.update(chunk)
            self.size += len(chunk)
            yield chunk
        self._exhausted = True

    def digests(self) -> dict[str, str]:
        """Hex digest per algorithm, once the whole stream has been read."""
        if not self._exhausted:
            # A digest of a prefix would look valid and be wrong.
            raise RuntimeError("HashingReader.digests() called before the end of the stream")
        return {name: hasher.hexdigest() for name, hasher in self._hashers.items()}
