"""A throwaway PostgreSQL cluster made with initdb, for machines without a running server."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from servicekit.infra.ports import tcp_answers
from servicekit.infra.process import ManagedProcess


def find_postgres_bindir() -> Path | None:
    """The directory holding initdb and postgres, from PATH or Debian's versioned layout."""
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    return None


def unprivileged_user() -> str | None:
    """PostgreSQL refuses to run as root; as root we run it as the `postgres` user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("running as root and no unprivileged user exists to run PostgreSQL")


@dataclass
class PostgresCluster:
    bindir: Path
    data_dir: Path
    port: int
    log_path: Path
    host: str = "127.0.0.1"
    process: ManagedProcess = field(init=False)

    def __post_init__(self) -> None:
        self.user = unprivileged_user()
        self.process = ManagedProcess(
            name="postgres",
            command=[
                str(self.bindir / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-c",
                f"listen_addresses={self.host}",
                "-c",
                f"unix_socket_directories={self.data_dir}",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ],
            log_path=self.log_path,
            ready=lambda: tcp_answers(self.host, self.port),
            user=self.user,
            stop_grace=10.0,
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def initdb(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            shutil.chown(self.data_dir, user=self.user)
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log_path.touch()
            shutil.chown(self.log_path, user=self.user)
        subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            user=self.user,
        )

    def start(self, timeout: float = 60.0) -> None:
        if not (self.data_dir / "PG_VERSION").exists():
            self.initdb()
        self.process.start(timeout=timeout)

    def stop(self) -> None:
        self.process.stop()
