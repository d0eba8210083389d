"""An S3 region served by SeaweedFS (master + volume + filer + S3 gateway in one process)."""

from __future__ import annotations

import json
import random
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from servicekit.infra.binaries import find_binary
from servicekit.infra.ports import ephemeral_range, hand_out, port_is_free
from servicekit.infra.process import ManagedProcess


@dataclass(frozen=True)
class S3Endpoint:
    """Where and how to reach one S3 region."""

    region: str
    url: str
    access_key: str
    secret_key: str
    # The SeaweedFS filer and master behind the S3 API, when this platform runs it: a SkyStore
    # proxy may read the volume servers directly (services/skystore/proxy/seaweed_reads.py).
    seaweed_filer: str = ""
    seaweed_master: str = ""


def seaweed_access(endpoints: Iterable[S3Endpoint]) -> dict[str, dict[str, str]]:
    """The SkyStore proxy's SEAWEEDFS setting for the `endpoints` that name their SeaweedFS."""
    return {
        e.region: {"filer": e.seaweed_filer, "master": e.seaweed_master}
        for e in endpoints
        if e.seaweed_filer and e.seaweed_master
    }


@dataclass(frozen=True)
class SeaweedPorts:
    master: int
    volume: int
    filer: int
    s3: int
    master_grpc: int
    volume_grpc: int
    filer_grpc: int
    s3_grpc: int

    @classmethod
    def from_base(cls, base: int) -> SeaweedPorts:
        """Four consecutive HTTP ports from `base`, their gRPC twins 10000 above."""
        http = [base, base + 1, base + 2, base + 3]
        return cls(*http, *(p + 10000 for p in http))

    @staticmethod
    def free_base(host: str = "127.0.0.1") -> int:
        """A base whose eight ports are free now, all below the kernel's ephemeral range
        (where the outgoing connections of other processes could take one before we bind)."""
        low, _ = ephemeral_range()
        top = min(low, 65536) - 10004
        for _ in range(500):
            base = random.randrange(20000, max(top, 20001))
            ports = SeaweedPorts.from_base(base).all()
            if max(ports) < 65536 and all(port_is_free(port, host) for port in ports):
                hand_out(ports)
                return base
        raise RuntimeError(f"no free SeaweedFS port base between 20000 and {top}")

    def all(self) -> list[int]:
        return [
            self.master,
            self.volume,
            self.filer,
            self.s3,
            self.master_grpc,
            self.volume_grpc,
            self.filer_grpc,
            self.s3_grpc,
        ]


def new_credentials() -> tuple[str, str]:
    return "EX" + secrets.token_hex(9).upper(), secrets.token_urlsafe(30)


@dataclass
class SeaweedRegion:
    region: str
    ports: SeaweedPorts
    data_dir: Path
    log_path: Path
    access_key: str
    secret_key: str
    host: str = "127.0.0.1"
    pid_path: Path | None = None
    process: ManagedProcess = field(init=False)

    def __post_init__(self) -> None:
        p = self.ports
        self.process = ManagedProcess(
            name=f"s3 {self.region}",
            command=[
                find_binary("weed"),
                "server",
                f"-dir={self.data_dir}",
                f"-ip={self.host}",
                f"-ip.bind={self.host}",
                f"-master.port={p.master}",
                f"-master.port.grpc={p.master_grpc}",
                f"-volume.port={p.volume}",
                f"-volume.port.grpc={p.volume_grpc}",
                "-filer",
                f"-filer.port={p.filer}",
                f"-filer.port.grpc={p.filer_grpc}",
                "-s3",
                f"-s3.port={p.s3}",
                f"-s3.port.grpc={p.s3_grpc}",
                f"-s3.config={self.config_path}",
                # Off: their fixed default ports would collide between regions.
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-master.volumeSizeLimitMB=256",
                "-volume.max=0",
                "-volume.preStopSeconds=0",
            ],
            # One volume per new bucket (SeaweedFS grows 7 by default): with volume slots
            # sized to the free disk, 7 per bucket runs out after ~45 buckets here.
            env={"WEED_MASTER_VOLUME_GROWTH_COPY_1": "1"},
            log_path=self.log_path,
            ready=self.ready,
            # SeaweedFS lingers ~15 s on SIGTERM; its stores survive a kill.
            stop_grace=2.0,
            pid_path=self.pid_path,
        )

    @property
    def config_path(self) -> Path:
        return self.data_dir / "s3-identities.json"

    @property
    def endpoint(self) -> S3Endpoint:
        return S3Endpoint(
            region=self.region,
            url=f"http://{self.host}:{self.ports.s3}",
            access_key=self.access_key,
            secret_key=self.secret_key,
            seaweed_filer=f"http://{self.host}:{self.ports.filer}",
            seaweed_master=f"http://{self.host}:{self.ports.master}",
        )

    def write_config(self) -> None:
        identity = {
            "name": "extract-root",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps({"identities": [identity]}))
        self.config_path.chmod(0o600)

    def start(self, timeout: float = 60.0) -> None:
        self.write_config()
        self.process.start(timeout=timeout)

    def stop(self) -> None:
        self.process.stop()

    def ready(self) -> bool:
        """Writable: the master knows a data node and the S3 gateway answers."""
        try:
            status = httpx.get(f"http://{self.host}:{self.ports.master}/dir/status", timeout=1)
            s3 = httpx.get(self.endpoint.url, timeout=1)
        except httpx.HTTPError:
            return False
        return '"DataNodes":[{' in status.text and s3.status_code in (200, 403)
