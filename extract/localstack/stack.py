"""Bringing the local stack up and down, and reporting each part's health."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from extract.localstack.home import StackHome
from extract.localstack.parts import PARTS, Part, Unit
from servicekit.infra import port_is_free
from servicekit.infra.process import StartError, pid_alive, read_pid, stop_process_group


class PortTaken(RuntimeError):
    def __init__(self, part: Part, port: int) -> None:
        super().__init__(
            f"port {port} needed by {part.name} is already taken; "
            f"set {part.port_variable} to move {part.name} elsewhere"
        )


@dataclass(frozen=True)
class PartStatus:
    name: str
    description: str
    pid: int | None
    url: str
    state: str  # "healthy" | "unhealthy" | "stopped"


Progress = Callable[[str, str], None]


class Stack:
    def __init__(
        self,
        home: StackHome,
        parts: Sequence[Part] = PARTS,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.home = home
        self.parts = tuple(parts)
        self.environ = os.environ if environ is None else environ

    def ports(self) -> dict[str, int]:
        ports = {}
        for part in self.parts:
            text = self.environ.get(part.port_variable, str(part.default_port))
            if not text.isdigit() or not 0 < int(text) < 55536:
                raise ValueError(f"{part.port_variable}={text!r} is not a usable port number")
            ports[part.name] = int(text)
        return ports

    def units(self) -> dict[str, Unit]:
        ports = self.ports()
        return {part.name: part.build(self.home, ports) for part in self.parts}

    def running(self, name: str) -> int | None:
        pid = read_pid(self.home.pid_path(name))
        return pid if pid is not None and pid_alive(pid) else None

    def up(self, progress: Progress) -> None:
        """Start every part not yet running; on a failure, stop what this call started."""
        self.home.prepare()
        units = self.units()
        to_start = [p for p in self.parts if self.running(p.name) is None]
        for part in to_start:
            for port in units[part.name].ports:
                if not port_is_free(port):
                    raise PortTaken(part, port)
        started: list[str] = []
        for part in self.parts:
            if part not in to_start:
                progress(part.name, "already running")
                continue
            progress(part.name, "starting")
            try:
                units[part.name].process.start(timeout=90)
            except StartError:
                for name in reversed(started):
                    units[name].process.stop()
                raise
            started.append(part.name)
            progress(part.name, "ready")
        self._write_endpoints(units)

    def _write_endpoints(self, units: Mapping[str, Unit]) -> None:
        endpoints = {name: unit.url for name, unit in units.items()}
        (self.home.root / "endpoints.json").write_text(json.dumps(endpoints, indent=2) + "\n")

    def down(self, progress: Progress) -> None:
        units = self.units()
        for part in reversed(self.parts):
            pid = self.running(part.name)
            if pid is None:
                progress(part.name, "not running")
            else:
                progress(part.name, "stopping")
                stop_process_group(pid, grace=units[part.name].process.stop_grace)
                progress(part.name, "stopped")
            self.home.pid_path(part.name).unlink(missing_ok=True)

    def status(self) -> list[PartStatus]:
        units = self.units()
        result = []
        for part in self.parts:
            pid = self.running(part.name)
            unit = units[part.name]
            result.append(PartStatus(part.name, part.description, pid, unit.url, _state(pid, unit)))
        return result


def _state(pid: int | None, unit: Unit) -> str:
    if pid is None:
        return "stopped"
    return "healthy" if unit.ready() else "unhealthy"
