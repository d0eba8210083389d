"""boto3 against the proxies, with both SeaweedFS regions behind them checked directly."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError


def _name(prefix: str = "b") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _physical_keys(physical: Callable[[str], Any], region: str, logical: str) -> list[str]:
    client = physical(region)
    names = [
        b["Name"] for b in client.list_buckets()["Buckets"] if b["Name"].startswith(f"{logical}-")
    ]
    keys: list[str] = []
    for name in names:
        keys += [o["Key"] for o in client.list_objects_v2(Bucket=name).get("Contents", [])]
    return keys


def test_bucket_made_at_the_edge_is_read_through_the_cloud(stack, physical) -> None:
    edge, cloud = stack.client("local:edge"), stack.client("local:cloud")
    bucket = _name()
    edge.create_bucket(Bucket=bucket)
    edge.put_object(
        Bucket=bucket, Key="dir/hello.txt", Body=b"hello world", ContentType="text/plain"
    )

    assert bucket in [b["Name"] for b in cloud.list_buckets()["Buckets"]]
    listed = cloud.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in listed["Contents"]] == ["dir/hello.txt"]
    got = cloud.get_object(Bucket=bucket, Key="dir/hello.txt")
    assert got["Body"].read() == b"hello world"
    assert got["ContentType"] == "text/plain"
    assert got["ETag"] == f'"{hashlib.md5(b"hello world").hexdigest()}"'
    # write_local: the bytes sit at the edge only.
    assert len(_physical_keys(physical, "local:edge", bucket)) == 1
    assert _physical_keys(physical, "local:cloud", bucket) == []


def test_metadata_and_empty_values_survive(stack) -> None:
    s3 = stack.client()
    bucket = _name()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", Metadata={"Colour": "blue", "empty": ""})
    head = s3.head_object(Bucket=bucket, Key="k")
    assert head["Metadata"] == {"colour": "blue", "empty": ""}
    assert head["ContentLength"] == 1


def test_range_and_conditional_get(stack) -> None:
    s3 = stack.client()
    bucket = _name()
    s3.create_bucket(Bucket=bucket)
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"0123456789")["ETag"]
    part = s3.get_object(Bucket=bucket, Key="k", Range="bytes=2-5")
    assert part["Body"].read() == b"2345"
    assert part["ContentRange"] == "bytes 2-5/10"
    assert s3.get_object(Bucket=bucket, Key="k", Range="bytes=-3")["Body"].read() == b"789"
    with pytest.raises(ClientError) as unchanged:
        s3.get_object(Bucket=bucket, Key="k", IfNoneMatch=etag)
    assert unchanged.value.response["Error"]["Code"] == "304"
    with pytest.raises(ClientError) as failed:
        s3.get_object(Bucket=bucket, Key="k", IfMatch='"nope"')
    assert failed.value.response["Error"]["Code"] == "PreconditionFailed"
    with pytest.raises(ClientError) as beyond:
        s3.get_object(Bucket=bucket, Key="k", Range="bytes=20-30")
    assert beyond.value.response["Error"]["Code"] == "InvalidRange"


def test_listing_with_delimiter_and_pages(stack) -> None:
    s3 = stack.client()
    bucket = _name()
    s3.create_bucket(Bucket=bucket)
    for key in ["a/1", "a/2", "b", "c/d/e", "é", "z z"]:
        s3.put_object(Bucket=bucket, Key=key, Body=b"")
    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [o["Key"] for o in top["Contents"]] == ["b", "z z", "é"]
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["a/", "c/"]
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, PaginationConfig={"PageSize": 2}
    ):
        keys += [o["Key"] for o in page.get("Contents", [])]
    assert keys == ["a/1", "a/2", "b", "c/d/e", "z z", "é"]
    v1 = s3.list_objects(Bucket=bucket, Prefix="a/", Marker="a/1")
    assert [o["Key"] for o in v1["Contents"]] == ["a/2"]
    after = s3.list_objects_v2(Bucket=bucket, StartAfter="c/d/e")
    assert [o["Key"] for o in after["Contents"]] == ["z z", "é"]


def test_overwrite_replaces_and_delete_removes(stack, physical) -> None:
    s3 = stack.client()
    bucket = _name()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"one")
    s3.put_object(Bucket=bucket, Key="k", Body=b"two")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"two"
    assert len(_physical_keys(physical, "local:edge", bucket)) == 1  # the old copy was removed
    s3.delete_object(Bucket=bucket, Key="k")
    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket=bucket, Key="k")
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"
    assert _physical_keys(physical, "local:edge", bucket) == []
    s3.delete_bucket(Bucket=bucket)
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_delete_objects_and_copy(stack) -> None:
    s3 = stack.client()
    bucket = _name()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="src", Body=b"payload", Metadata={"m": "1"})
    copied = s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert copied["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(b"payload").hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="dst")
    assert got["Body"].read() == b"payload" and got["Metadata"] == {"m": "1"}
    deleted = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "src"}, {"Key": "dst"}]})
    assert sorted(d["Key"] for d in deleted["Deleted"]) == ["dst", "src"]
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_multipart_upload(stack) -> None:
    s3 = stack.client()
    bucket = _name()
    s3.create_bucket(Bucket=bucket)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big", ContentType="application/x-big")
    uid = upload["UploadId"]
    first, second = b"a" * (5 * 1024 * 1024), b"b" * 1024
    parts = [
        {
            "PartNumber": n,
            "ETag": s3.upload_part(Bucket=bucket, Key="big", UploadId=uid, PartNumber=n, Body=data)[
                "ETag"
            ],
        }
        for n, data in ((1, first), (2, second))
    ]
    assert [
        p["PartNumber"] for p in s3.list_parts(Bucket=bucket, Key="big", UploadId=uid)["Parts"]
    ] == [1, 2]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [uid]
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="big")  # nothing visible before Complete
    s3.complete_multipart_upload(
        Bucket=bucket, Key="big", UploadId=uid, MultipartUpload={"Parts": parts}
    )
    got = s3.get_object(Bucket=bucket, Key="big")
    assert got["ContentLength"] == len(first) + len(second)
    assert got["ContentType"] == "application/x-big"
    assert got["Body"].read() == first + second
    with pytest.raises(ClientError) as gone:
        s3.abort_multipart_upload(Bucket=bucket, Key="big", UploadId=uid)
    assert gone.value.response["Error"]["Code"] == "NoSuchUpload"


def test_unsigned_payload_and_presigned_urls(stack) -> None:
    import httpx

    s3 = stack.client()
    bucket = _name()
    s3.create_bucket(Bucket=bucket)
    put = s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "p"}, ExpiresIn=60
    )
    assert httpx.put(put, content=b"via presigned").status_code == 200
    get = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "p"}, ExpiresIn=60
    )
    assert httpx.get(get).content == b"via presigned"


def test_bad_input_answers_exact_s3_codes(stack) -> None:
    s3 = stack.client()
    bucket = _name()
    s3.create_bucket(Bucket=bucket)

    def code(call: Callable[[], Any]) -> str:
        with pytest.raises(ClientError) as error:
            call()
        return error.value.response["Error"]["Code"]

    assert code(lambda: s3.create_bucket(Bucket="Bad_Name")) == "InvalidBucketName"
    assert code(lambda: s3.get_object(Bucket=bucket, Key="nope")) == "NoSuchKey"
    assert code(lambda: s3.list_objects_v2(Bucket=_name())) == "NoSuchBucket"
    assert code(lambda: s3.create_bucket(Bucket=bucket)) == "BucketAlreadyOwnedByYou"
    assert code(lambda: s3.list_parts(Bucket=bucket, Key="k", UploadId="nope")) == "NoSuchUpload"
    assert (
        code(
            lambda: s3.put_object(
                Bucket=bucket, Key="k", Body=b"abc", ContentMD5="1B2M2Y8AsgTpgAmY7PhCfg=="
            )
        )
        == "BadDigest"
    )
    s3.put_object(Bucket=bucket, Key="full", Body=b"x")
    assert code(lambda: s3.delete_bucket(Bucket=bucket)) == "BucketNotEmpty"
    wrong = stack.client()
    wrong._request_signer._credentials.secret_key = "not-the-secret"
    assert code(lambda: wrong.list_buckets()) == "SignatureDoesNotMatch"
    import boto3
    from botocore.config import Config

    unknown = boto3.client(
        "s3",
        endpoint_url=stack.proxies["local:edge"].url,
        aws_access_key_id="AKIDUNKNOWN",
        aws_secret_access_key="x",
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )
    assert code(lambda: unknown.list_buckets()) == "InvalidAccessKeyId"
    # A failed PUT leaves nothing visible.
    assert code(lambda: s3.head_object(Bucket=bucket, Key="k")) == "404"


def test_expired_presigned_url_is_access_denied(stack) -> None:
    import time

    import httpx

    s3 = stack.client()
    bucket = _name()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=1
    )
    time.sleep(2)
    response = httpx.get(url)
    assert response.status_code == 403
    assert b"<Code>AccessDenied</Code>" in response.content
    assert b"Request has expired" in response.content


def test_a_read_after_an_overwrite_through_the_other_proxy_sees_it(stack) -> None:
    edge, cloud = stack.client("local:edge"), stack.client("local:cloud")
    bucket = _name()
    edge.create_bucket(Bucket=bucket)
    for n in range(8):
        body = f"generation {n}".encode()
        (edge if n % 2 else cloud).put_object(Bucket=bucket, Key="k", Body=body)
        for s3 in (edge, cloud):
            assert s3.head_object(Bucket=bucket, Key="k")["ContentLength"] == len(body)
            got = s3.get_object(Bucket=bucket, Key="k")
            assert got["Body"].read() == body
            assert got["ETag"] == edge.head_object(Bucket=bucket, Key="k")["ETag"]


def test_keys_with_dots_escapes_and_symbols_reach_the_locator_intact(stack) -> None:
    s3 = stack.client()
    bucket = _name()
    s3.create_bucket(Bucket=bucket)
    keys = ["..", ".", "a/../b", "a/./b", "x%2Fy", "a b+c=d&e?f#g", "ünï/çødé", "//lead"]
    for n, key in enumerate(keys):
        s3.put_object(Bucket=bucket, Key=key, Body=f"body {n}".encode())
    for n, key in enumerate(keys):
        assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(f"body {n}")
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == f"body {n}".encode()
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="a b+c")["Contents"]
    assert [o["Key"] for o in listed] == ["a b+c=d&e?f#g"]
    for key in keys:
        s3.delete_object(Bucket=bucket, Key=key)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
