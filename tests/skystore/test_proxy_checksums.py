"""S3 additional checksums through the proxy: declared in a header or an aws-chunked trailer,
verified as the bytes pass (BadDigest, nothing stored), kept and answered on HEAD/GET."""

from __future__ import annotations

import base64
import hashlib
import uuid
import zlib
from datetime import UTC, datetime

import httpx
import pytest
from awscrt import checksums as crt
from botocore.exceptions import ClientError

from servicekit.sigv4 import STREAMING_UNSIGNED_TRAILER, sign_request

BODY = b"checksummed bytes " * 1000


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


EXPECTED = {
    "CRC32": _b64(zlib.crc32(BODY).to_bytes(4, "big")),
    "CRC32C": _b64(crt.crc32c(BODY, 0).to_bytes(4, "big")),
    "CRC64NVME": _b64(crt.crc64nvme(BODY, 0).to_bytes(8, "big")),
    "SHA1": _b64(hashlib.sha1(BODY).digest()),
    "SHA256": _b64(hashlib.sha256(BODY).digest()),
}


def _bucket(s3) -> str:  # type: ignore[no-untyped-def]
    name = f"sums-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    return name


def _code(error: pytest.ExceptionInfo[ClientError]) -> str:
    return str(error.value.response["Error"]["Code"])


@pytest.mark.parametrize("algorithm", sorted(EXPECTED))
def test_each_algorithm_is_verified_kept_and_answered(stack, algorithm: str) -> None:
    s3 = stack.client()
    bucket = _bucket(s3)
    put = s3.put_object(Bucket=bucket, Key="k", Body=BODY, ChecksumAlgorithm=algorithm)
    assert put[f"Checksum{algorithm}"] == EXPECTED[algorithm]
    head = s3.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert head[f"Checksum{algorithm}"] == EXPECTED[algorithm]
    assert f"Checksum{algorithm}" not in s3.head_object(Bucket=bucket, Key="k")
    # botocore checks the body it reads against the checksum the proxy answers.
    got = s3.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert got[f"Checksum{algorithm}"] == EXPECTED[algorithm]
    assert got["Body"].read() == BODY
    ranged = s3.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED", Range="bytes=0-9")
    assert f"Checksum{algorithm}" not in ranged  # a range is not the object the sum covers
    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "k"})
    copied = s3.head_object(Bucket=bucket, Key="copy", ChecksumMode="ENABLED")
    assert copied[f"Checksum{algorithm}"] == EXPECTED[algorithm]


def test_a_wrong_checksum_is_bad_digest_and_nothing_is_stored(stack) -> None:
    s3 = stack.client()
    bucket = _bucket(s3)
    wrong = _b64(zlib.crc32(b"other bytes").to_bytes(4, "big"))
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=bucket, Key="k", Body=BODY, ChecksumCRC32=wrong)
    assert _code(refused) == "BadDigest"
    with pytest.raises(ClientError) as missing:
        s3.head_object(Bucket=bucket, Key="k")
    assert _code(missing) == "404"


def test_malformed_and_duplicate_checksum_headers_are_invalid_requests(stack) -> None:
    s3 = stack.client()
    bucket = _bucket(s3)
    with pytest.raises(ClientError) as malformed:
        s3.put_object(Bucket=bucket, Key="k", Body=BODY, ChecksumCRC32="not base64!")
    assert _code(malformed) == "InvalidRequest"
    assert "x-amz-checksum-crc32" in str(malformed.value)

    def both(request, **_) -> None:  # type: ignore[no-untyped-def]
        request.headers["x-amz-checksum-sha1"] = EXPECTED["SHA1"]

    s3.meta.events.register("before-sign.s3.PutObject", both)
    with pytest.raises(ClientError) as twice:
        s3.put_object(Bucket=bucket, Key="k", Body=BODY, ChecksumCRC32=EXPECTED["CRC32"])
    assert _code(twice) == "InvalidRequest"


def test_a_part_with_a_wrong_checksum_is_refused(stack) -> None:
    s3 = stack.client()
    bucket = _bucket(s3)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    part = {"Bucket": bucket, "Key": "big", "UploadId": upload, "PartNumber": 1, "Body": BODY}
    with pytest.raises(ClientError) as refused:
        s3.upload_part(**part, ChecksumSHA256=_b64(hashlib.sha256(b"x").digest()))
    assert _code(refused) == "BadDigest"
    assert (
        s3.upload_part(**part, ChecksumSHA256=EXPECTED["SHA256"])["ChecksumSHA256"]
        == (EXPECTED["SHA256"])
    )
    s3.abort_multipart_upload(Bucket=bucket, Key="big", UploadId=upload)


def _trailer_put(stack, bucket: str, key: str, trailer: str) -> httpx.Response:  # type: ignore[no-untyped-def]
    """An aws-chunked upload with an unsigned payload and the crc32 in the trailer."""
    url = f"{stack.proxies['local:edge'].url}/{bucket}/{key}"
    path = f"/{bucket}/{key}"
    headers = {
        "host": url.split("/")[2],
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(BODY)),
        "x-amz-trailer": "x-amz-checksum-crc32",
    }
    headers |= sign_request(
        method="PUT",
        path=path,
        headers=headers,
        payload_hash=STREAMING_UNSIGNED_TRAILER,
        access_key=stack.key_id,
        secret=stack.secret,
        region="us-east-1",
        now=datetime.now(UTC),
    )
    half = len(BODY) // 2
    body = b"".join(
        f"{len(piece):x}\r\n".encode() + piece + b"\r\n" for piece in (BODY[:half], BODY[half:])
    )
    body += b"0\r\n" + trailer.encode() + b"\r\n\r\n"
    return httpx.put(url, content=body, headers=headers)


def test_a_trailer_checksum_is_verified(stack) -> None:
    s3 = stack.client()
    bucket = _bucket(s3)
    good = _trailer_put(stack, bucket, "good", f"x-amz-checksum-crc32:{EXPECTED['CRC32']}")
    assert good.status_code == 200, good.text
    assert good.headers["x-amz-checksum-crc32"] == EXPECTED["CRC32"]
    assert s3.get_object(Bucket=bucket, Key="good")["Body"].read() == BODY

    wrong = _b64(zlib.crc32(b"x").to_bytes(4, "big"))
    bad = _trailer_put(stack, bucket, "bad", f"x-amz-checksum-crc32:{wrong}")
    assert bad.status_code == 400 and b"<Code>BadDigest</Code>" in bad.content
    absent = _trailer_put(stack, bucket, "absent", f"x-amz-checksum-sha1:{EXPECTED['SHA1']}")
    assert absent.status_code == 400 and b"MalformedTrailerError" in absent.content
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert [o["Key"] for o in listed] == ["good"]
