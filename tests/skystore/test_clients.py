"""The aws CLI, s3cmd and rclone each run a whole session against a proxy."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
MiB = 1024 * 1024


def _run(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    small = tmp_path / "a.txt"
    small.write_bytes(b"hello skystore")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(12 * MiB))
    return {"small": small, "big": big}


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_aws_cli_session(stack, files: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "aws-config"
    config.write_text(
        "[default]\nregion = us-east-1\ns3 =\n  addressing_style = path\n"
        "  multipart_threshold = 8MB\n  multipart_chunksize = 5MB\n"
    )
    env = {
        "AWS_ACCESS_KEY_ID": stack.key_id,
        "AWS_SECRET_ACCESS_KEY": stack.secret,
        "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }
    aws = [str(BIN / "aws"), "--endpoint-url", stack.proxies["local:edge"].url]
    bucket = f"aws-{uuid.uuid4().hex[:10]}"
    _run([*aws, "s3api", "create-bucket", "--bucket", bucket], env)
    _run([*aws, "s3", "cp", str(files["small"]), f"s3://{bucket}/dir/a.txt"], env)
    _run([*aws, "s3", "cp", str(files["big"]), f"s3://{bucket}/big.bin"], env)
    listed = json.loads(
        _run([*aws, "s3api", "list-objects-v2", "--bucket", bucket, "--delimiter", "/"], env)
    )
    assert [o["Key"] for o in listed["Contents"]] == ["big.bin"]
    assert [p["Prefix"] for p in listed["CommonPrefixes"]] == ["dir/"]
    head = json.loads(
        _run([*aws, "s3api", "head-object", "--bucket", bucket, "--key", "big.bin"], env)
    )
    assert head["ETag"].endswith('-3"')  # multipart: 12 MiB in 5 MiB parts
    part = tmp_path / "part"
    _run(
        [
            *aws,
            "s3api",
            "get-object",
            "--bucket",
            bucket,
            "--key",
            "dir/a.txt",
            "--range",
            "bytes=0-4",
            str(part),
        ],
        env,
    )
    assert part.read_bytes() == b"hello"
    back = tmp_path / "back.bin"
    _run([*aws, "s3", "cp", f"s3://{bucket}/big.bin", str(back)], env)
    assert _md5(back) == _md5(files["big"])
    _run([*aws, "s3", "cp", f"s3://{bucket}/dir/a.txt", f"s3://{bucket}/copy.txt"], env)
    listing = _run([*aws, "s3", "ls", f"s3://{bucket}/"], env)
    assert "copy.txt" in listing and "PRE dir/" in listing
    _run([*aws, "s3", "rm", f"s3://{bucket}", "--recursive"], env)
    _run([*aws, "s3api", "delete-bucket", "--bucket", bucket], env)
    assert bucket not in _run([*aws, "s3", "ls"], env)


def test_s3cmd_session(stack, files: dict[str, Path], tmp_path: Path) -> None:
    host = stack.proxies["local:edge"].url.removeprefix("http://")
    config = tmp_path / "s3cfg"
    config.write_text(
        "[default]\n"
        f"access_key = {stack.key_id}\nsecret_key = {stack.secret}\n"
        f"host_base = {host}\nhost_bucket = {host}\n"
        "use_https = False\nsignature_v2 = False\nbucket_location = us-east-1\n"
    )
    s3cmd = [str(BIN / "s3cmd"), "-c", str(config)]
    env: dict[str, str] = {}
    bucket = f"s3cmd-{uuid.uuid4().hex[:10]}"
    _run([*s3cmd, "mb", f"s3://{bucket}"], env)
    _run([*s3cmd, "put", str(files["small"]), f"s3://{bucket}/dir/a.txt"], env)
    _run(
        [*s3cmd, "put", "--multipart-chunk-size-mb=5", str(files["big"]), f"s3://{bucket}/big.bin"],
        env,
    )
    top = _run([*s3cmd, "ls", f"s3://{bucket}/"], env)
    assert "DIR" in top and f"s3://{bucket}/dir/" in top and f"s3://{bucket}/big.bin" in top
    # A partial file continued with --continue is fetched with a Range request.
    partial = tmp_path / "resumed.txt"
    partial.write_bytes(b"hello")
    _run([*s3cmd, "get", "--continue", f"s3://{bucket}/dir/a.txt", str(partial)], env)
    assert partial.read_bytes() == b"hello skystore"
    back = tmp_path / "back.bin"
    _run([*s3cmd, "get", f"s3://{bucket}/big.bin", str(back)], env)
    assert _md5(back) == _md5(files["big"])
    _run([*s3cmd, "cp", f"s3://{bucket}/dir/a.txt", f"s3://{bucket}/copy.txt"], env)
    assert "copy.txt" in _run([*s3cmd, "ls", f"s3://{bucket}/"], env)
    _run([*s3cmd, "del", "--recursive", "--force", f"s3://{bucket}"], env)
    _run([*s3cmd, "rb", f"s3://{bucket}"], env)


def test_rclone_session(stack, files: dict[str, Path], tmp_path: Path) -> None:
    env = {
        "RCLONE_CONFIG": str(tmp_path / "rclone.conf"),
        "RCLONE_CONFIG_SKY_TYPE": "s3",
        "RCLONE_CONFIG_SKY_PROVIDER": "Other",
        "RCLONE_CONFIG_SKY_ENDPOINT": stack.proxies["local:edge"].url,
        "RCLONE_CONFIG_SKY_ACCESS_KEY_ID": stack.key_id,
        "RCLONE_CONFIG_SKY_SECRET_ACCESS_KEY": stack.secret,
        "RCLONE_CONFIG_SKY_REGION": "us-east-1",
        "RCLONE_CONFIG_SKY_FORCE_PATH_STYLE": "true",
    }
    rclone = [str(BIN / "rclone"), "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M"]
    bucket = f"rclone-{uuid.uuid4().hex[:10]}"
    _run([*rclone, "mkdir", f"sky:{bucket}"], env)
    _run([*rclone, "copyto", str(files["small"]), f"sky:{bucket}/dir/a.txt"], env)
    _run([*rclone, "copyto", str(files["big"]), f"sky:{bucket}/big.bin"], env)
    assert sorted(_run([*rclone, "lsf", f"sky:{bucket}"], env).split()) == ["big.bin", "dir/"]
    assert (
        _run([*rclone, "cat", "--offset", "6", "--count", "3", f"sky:{bucket}/dir/a.txt"], env)
        == "sky"
    )
    back = tmp_path / "back.bin"
    _run([*rclone, "copyto", f"sky:{bucket}/big.bin", str(back)], env)
    assert _md5(back) == _md5(files["big"])
    _run([*rclone, "copyto", f"sky:{bucket}/dir/a.txt", f"sky:{bucket}/copy.txt"], env)
    assert "copy.txt" in _run([*rclone, "lsf", f"sky:{bucket}"], env)
    _run([*rclone, "purge", f"sky:{bucket}"], env)
    assert bucket not in _run([*rclone, "lsd", "sky:"], env)
