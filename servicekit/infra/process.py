"""A child process with a log file, a readiness probe and a graceful stop.

Two modes: attached (tests: the object owns the Popen) and detached (the local stack: the
process outlives the CLI and is found again through its pid file).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Children this process started, kept until stopped: a detached part (local stack) outlives the
# ManagedProcess that started it, and whoever stops it by pid must still reap it.
_children: dict[int, subprocess.Popen[bytes]] = {}


class StartError(RuntimeError):
    """A process exited or never became ready; the message carries the log's tail."""


def wait_until(check: Callable[[], bool], *, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class ManagedProcess:
    name: str
    command: Sequence[str]
    log_path: Path
    ready: Callable[[], bool]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    stop_grace: float = 5.0
    user: str | None = None
    pid_path: Path | None = None
    _popen: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def start(self, *, timeout: float = 30.0) -> None:
        """Start the process in its own session and wait until `ready()` holds."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                list(self.command),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                cwd=self.cwd,
                start_new_session=True,
                user=self.user,
            )
        _children[self._popen.pid] = self._popen
        if self.pid_path is not None:
            self.pid_path.parent.mkdir(parents=True, exist_ok=True)
            write_pid(self.pid_path, self._popen.pid)
        try:
            ready = wait_until(self._ready_or_dead, timeout=timeout)
        except BaseException:
            self.stop()  # a probe that raises (or Ctrl-C) must not leave the child behind
            raise
        if not ready:
            self.stop()
            tail = log_tail(self.log_path)
            raise StartError(f"{self.name} not ready after {timeout:.0f}s:\n{tail}")
        returncode = self._popen.poll()
        if returncode is not None:
            self.stop()
            raise StartError(f"{self.name} exited with {returncode}:\n{log_tail(self.log_path)}")

    def _ready_or_dead(self) -> bool:
        assert self._popen is not None
        return self._popen.poll() is not None or self.ready()

    @property
    def pid(self) -> int | None:
        if self._popen is not None:
            return self._popen.pid
        return read_pid(self.pid_path) if self.pid_path else None

    def running(self) -> bool:
        pid = self.pid
        if pid is None:
            return False
        if self._popen is not None:
            return self._popen.poll() is None
        return pid_alive(pid)

    def stop(self) -> None:
        pid = self.pid
        if pid is not None:
            stop_process_group(pid, grace=self.stop_grace)
        self._popen = None
        if self.pid_path is not None:
            self.pid_path.unlink(missing_ok=True)


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def write_pid(path: Path, pid: int) -> None:
    path.write_text(f"{pid} {_start_time(pid) or '-'}\n")


def read_pid(path: Path) -> int | None:
    """The pid recorded in `path`, or None when that process is gone.

    The recorded start time guards against a reused pid: after a reboot a stale file could
    otherwise point `extract down` at an unrelated process.
    """
    try:
        pid_text, started = path.read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    current = _start_time(pid)
    if current is None or (started != "-" and current != started):
        return None
    return pid


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it has stopped all the same.
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return True


def stop_process_group(pid: int, *, grace: float) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after `grace` seconds."""
    try:
        _stop_group(pid, grace=grace)
    finally:
        child = _children.pop(pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)


def _stop_group(pid: int, *, grace: float) -> None:
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    # Children of the group may linger after their leader; they go too, and are gone (not
    # merely signalled) when this returns.
    wait_until(lambda: not pid_alive(pid), timeout=grace, interval=0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    wait_until(lambda: not _group_runs(pgid), timeout=5, interval=0.02)


def _group_runs(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (a zombie has stopped all the same)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            state, _parent, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
            if int(group) == pgid and state != "Z":
                return True
    return False
