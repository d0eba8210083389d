"""Finding free TCP ports and checking that a port can be bound."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_handed_out: set[int] = set()


def ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now, never one handed out before by this process.

    Chosen below the kernel's ephemeral range: servers started on ports from that range race
    with the outgoing connections of every other process on the machine.
    """
    low, _ = ephemeral_range()
    candidates = range(20000, low) if low > 21000 else range(low, 65535)
    for _ in range(200):
        port = random.choice(candidates)
        if port not in _handed_out and port_is_free(port, host):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port found in {candidates.start}-{candidates.stop}")


def hand_out(ports: list[int]) -> None:
    """Record ports chosen by other means, so free_port() in this process never returns them."""
    _handed_out.update(ports)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def tcp_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
