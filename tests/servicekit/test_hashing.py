"""Named hash algorithms, check-value files and hashing while streaming."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import blake3
import pytest

from servicekit.errors import InvalidInput
from servicekit.hashing import (
    HASH_ALGORITHMS,
    HashingReader,
    check_value_name,
    new_hasher,
    parse_check_value,
)

DATA = b"the lagoon rises" * 1000
EXPECTED = {
    "sha256": hashlib.sha256(DATA).hexdigest(),
    "sha512": hashlib.sha512(DATA).hexdigest(),
    "blake3": blake3.blake3(DATA).hexdigest(),
}


async def chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_algorithms_are_sha256_sha512_and_blake3() -> None:
    assert set(HASH_ALGORITHMS) == {"sha256", "sha512", "blake3"}


@pytest.mark.parametrize("algorithm", HASH_ALGORITHMS)
def test_new_hasher_matches_the_reference_implementation(algorithm: str) -> None:
    hasher = new_hasher(algorithm)
    hasher.update(DATA[:100])
    hasher.update(DATA[100:])
    assert hasher.hexdigest() == EXPECTED[algorithm]


def test_unknown_algorithm_is_refused_naming_the_allowed_ones() -> None:
    with pytest.raises(InvalidInput) as refused:
        new_hasher("md5")
    assert "'md5'" in refused.value.message
    assert all(name in refused.value.message for name in HASH_ALGORITHMS)


@pytest.mark.parametrize(
    ("algorithm", "name"),
    [
        ("sha256", "models/model.onnx.sha256asc"),
        ("sha512", "models/model.onnx.sha512asc"),
        ("blake3", "models/model.onnx.blake3asc"),
    ],
)
def test_check_value_name_appends_the_algorithm(algorithm: str, name: str) -> None:
    assert check_value_name("models/model.onnx", algorithm) == name


def test_check_value_name_refuses_unknown_algorithm() -> None:
    with pytest.raises(InvalidInput):
        check_value_name("model.onnx", "crc32")


@pytest.mark.parametrize(
    "template",
    [
        "{hex}",
        "{hex}\n",
        "{hex}  model.onnx\n",
        "{hex} *model.onnx\n",
        "{hex}  name with  spaces.onnx",
        "\n{hex}\r\n\n",
    ],
)
@pytest.mark.parametrize("algorithm", HASH_ALGORITHMS)
def test_parse_check_value_accepts_sha256sum_forms(algorithm: str, template: str) -> None:
    text = template.format(hex=EXPECTED[algorithm])
    assert parse_check_value(text, algorithm) == EXPECTED[algorithm]


def test_parse_check_value_lower_cases() -> None:
    assert parse_check_value(EXPECTED["sha256"].upper(), "sha256") == EXPECTED["sha256"]


def test_parse_check_value_refuses_a_digest_of_the_wrong_length() -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_check_value(EXPECTED["sha256"], "sha512")
    assert "expected 128 hex digits, got 64" in refused.value.message


@pytest.mark.parametrize(
    "text",
    [
        "not-a-digest",
        "{hex} model.onnx",  # one space without '*' is neither sha256sum form
        "sha256:{hex}",
    ],
)
def test_parse_check_value_refuses_other_forms(text: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_check_value(text.format(hex=EXPECTED["sha256"]), "sha256")
    assert "expected '<hex>'" in refused.value.message


def test_parse_check_value_refuses_several_lines() -> None:
    text = f"{EXPECTED['sha256']}  a.onnx\n{EXPECTED['sha256']}  b.onnx\n"
    with pytest.raises(InvalidInput) as refused:
        parse_check_value(text, "sha256")
    assert "expected one line, found 2" in refused.value.message


def test_parse_check_value_refuses_an_empty_file() -> None:
    with pytest.raises(InvalidInput, match="found 0"):
        parse_check_value("\n", "sha256")


async def test_hashing_reader_passes_chunks_through_and_hashes_them_all() -> None:
    reader = HashingReader(chunked(DATA, 999), HASH_ALGORITHMS)
    passed = b"".join([chunk async for chunk in reader])
    assert passed == DATA
    assert reader.size == len(DATA)
    assert reader.digests() == EXPECTED


async def test_hashing_reader_refuses_digests_before_the_end() -> None:
    reader = HashingReader(chunked(DATA, 999), ["sha256"])
    stream = aiter(reader)
    await anext(stream)
    with pytest.raises(RuntimeError, match="before the end"):
        reader.digests()
    async for _ in stream:
        pass
    assert reader.digests() == {"sha256": EXPECTED["sha256"]}


def test_hashing_reader_needs_an_algorithm() -> None:
    with pytest.raises(InvalidInput, match="no hash algorithm"):
        HashingReader(chunked(DATA, 999), [])
