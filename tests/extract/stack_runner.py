"""Running `extract` and a whole local stack in a private EXTRACT_HOME, on free ports."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from extract.localstack import PARTS
from servicekit.infra import free_port, port_is_free
from servicekit.infra.seaweed import SeaweedPorts

EXTRACT = [sys.executable, "-m", "extract"]


def _free_pair() -> int:
    """A free port whose next port is free too (the gateway's S3 port is one above)."""
    while not port_is_free((port := free_port()) + 1):
        pass
    return port


def stack_env(home: Path) -> dict[str, str]:
    env = {"EXTRACT_HOME": str(home)}
    for part in PARTS:
        if part.name.startswith("s3-"):
            port = SeaweedPorts.free_base()
        elif part.name == "gateway":
            port = _free_pair()
        else:
            port = free_port()
        env[part.port_variable] = str(port)
    return {**os.environ, **env}


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EXTRACT, *args], env=env, capture_output=True, text=True, timeout=180)


@contextmanager
def started_stack(home: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    env = stack_env(home)
    started = run(["up"], env)
    try:
        assert started.returncode == 0, started.stderr
        yield home, env
    finally:
        run(["down"], env)
