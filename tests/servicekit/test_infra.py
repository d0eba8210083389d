"""The launchers behind the harness and the local stack, against the real binaries."""

from __future__ import annotations

import random
import shutil
import sys
import uuid
from pathlib import Path

import asyncpg
import boto3
import pytest
from botocore.exceptions import ClientError

from servicekit.infra import (
    ManagedProcess,
    NatsServer,
    PostgresCluster,
    S3Endpoint,
    find_postgres_bindir,
    free_port,
    port_is_free,
)
from servicekit.infra.nats import jetstream_answers
from servicekit.infra.ports import ephemeral_range
from servicekit.infra.process import StartError, pid_alive
from servicekit.infra.seaweed import SeaweedPorts
from servicekit.testing.sources import run_sync, scratch_dir


def s3_client(endpoint: S3Endpoint):
    return boto3.client(
        "s3",
        endpoint_url=endpoint.url,
        aws_access_key_id=endpoint.access_key,
        aws_secret_access_key=endpoint.secret_key,
        region_name="us-east-1",
    )


def test_nats_server_restarts_on_same_port_with_jetstream(tmp_path: Path) -> None:
    server = NatsServer(port=free_port(), store_dir=tmp_path / "js", log_path=tmp_path / "log")
    server.start()
    try:
        assert jetstream_answers("127.0.0.1", server.port)
        server.stop()
        assert not jetstream_answers("127.0.0.1", server.port)
        server.start()
        assert jetstream_answers("127.0.0.1", server.port)
    finally:
        server.stop()
    assert port_is_free(server.port)


def test_s3_regions_are_independent_servers(s3_regions: dict[str, S3Endpoint]) -> None:
    edge, cloud = s3_client(s3_regions["local:edge"]), s3_client(s3_regions["local:cloud"])
    bucket = f"harness-{uuid.uuid4().hex[:8]}"
    edge.create_bucket(Bucket=bucket)
    edge.put_object(Bucket=bucket, Key="k", Body=b"edge only")
    assert edge.get_object(Bucket=bucket, Key="k")["Body"].read() == b"edge only"
    with pytest.raises(ClientError) as missing:
        cloud.head_bucket(Bucket=bucket)
    assert missing.value.response["Error"]["Code"] in ("404", "NoSuchBucket")


def test_s3_region_refuses_wrong_secret(s3_endpoint: S3Endpoint) -> None:
    wrong = S3Endpoint(s3_endpoint.region, s3_endpoint.url, s3_endpoint.access_key, "nope")
    with pytest.raises(ClientError) as refused:
        s3_client(wrong).list_buckets()
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_free_port_never_returns_a_port_of_a_chosen_seaweed_base(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    taken = SeaweedPorts.from_base(SeaweedPorts.free_base()).all()
    assert max(taken) < ephemeral_range()[0]
    real_choice = random.choice
    offered = iter([taken[4], taken[0]])  # a gRPC twin, then the master port
    monkeypatch.setattr(
        random, "choice", lambda candidates: next(offered, None) or real_choice(candidates)
    )
    assert free_port() not in taken


def test_managed_process_reports_log_tail_when_it_dies(tmp_path: Path) -> None:
    process = ManagedProcess(
        name="doomed",
        command=[sys.executable, "-c", "import sys; print('boom: bad flag'); sys.exit(3)"],
        log_path=tmp_path / "doomed.log",
        ready=lambda: False,
    )
    with pytest.raises(StartError, match="boom: bad flag"):
        process.start(timeout=10)


def test_managed_process_stop_takes_its_children_too(tmp_path: Path) -> None:
    child_pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time, pathlib;"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        f"pathlib.Path({str(child_pid_file)!r}).write_text(str(c.pid));"
        "time.sleep(60)"
    )
    process = ManagedProcess(
        name="parent",
        command=[sys.executable, "-c", script],
        log_path=tmp_path / "parent.log",
        ready=child_pid_file.exists,
        pid_path=tmp_path / "parent.pid",
    )
    process.start(timeout=10)
    child = int(child_pid_file.read_text())
    assert pid_alive(child)
    process.stop()
    assert not pid_alive(child)
    assert not (tmp_path / "parent.pid").exists()


def test_managed_process_is_stopped_when_its_readiness_probe_raises(tmp_path: Path) -> None:
    started: list[int | None] = []

    def probe() -> bool:
        started.append(process.pid)
        raise RuntimeError("probe broke")

    process = ManagedProcess(
        name="sleeper",
        command=[sys.executable, "-c", "import time; time.sleep(60)"],
        log_path=tmp_path / "sleeper.log",
        ready=probe,
        pid_path=tmp_path / "sleeper.pid",
    )
    with pytest.raises(RuntimeError, match="probe broke"):
        process.start(timeout=10)
    assert started and started[0] is not None
    assert not pid_alive(started[0])
    assert not (tmp_path / "sleeper.pid").exists()


@pytest.mark.skipif(find_postgres_bindir() is None, reason="no PostgreSQL binaries installed")
def test_throwaway_postgres_cluster_accepts_connections() -> None:
    root = scratch_dir("extract-pg-test-")
    cluster = PostgresCluster(
        bindir=find_postgres_bindir(),
        data_dir=root / "data",
        port=free_port(),
        log_path=root / "pg.log",
    )
    cluster.start()
    try:

        async def version() -> str:
            conn = await asyncpg.connect(cluster.url)
            try:
                return await conn.fetchval("SHOW server_version")
            finally:
                await conn.close()

        assert run_sync(version)[0].isdigit()
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    assert port_is_free(cluster.port)


async def test_pg_database_url_is_a_fresh_database(pg_database_url: str) -> None:
    conn = await asyncpg.connect(pg_database_url.replace("+asyncpg", ""))
    try:
        tables = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
        name = await conn.fetchval("SELECT current_database()")
    finally:
        await conn.close()
    assert tables == 0
    assert name.startswith("extract_test_")
