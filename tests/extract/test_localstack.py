"""`extract up / status / token / down` on real binaries, in a private EXTRACT_HOME."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from stack_runner import run, stack_env

from extract.localstack import PARTS, Stack, StackHome
from servicekit.infra import port_is_free
from servicekit.infra.process import pid_alive, read_pid
from servicekit.security import JWKSet, verify_identity_token


def test_up_status_down_leaves_no_process(running_stack: tuple[Path, dict[str, str]]) -> None:
    home, env = running_stack
    status = run(["status"], env)
    assert status.returncode == 0, status.stdout + status.stderr
    for part in PARTS:
        assert part.name in status.stdout
    assert status.stdout.count("healthy") == len(PARTS)
    pids = [read_pid(home / "run" / f"{part.name}.pid") for part in PARTS]
    assert all(pid is not None and pid_alive(pid) for pid in pids)
    endpoints = json.loads((home / "endpoints.json").read_text())
    assert endpoints["nats"] == f"nats://127.0.0.1:{env['EXTRACT_NATS_PORT']}"

    stopped = run(["down"], env)
    assert stopped.returncode == 0, stopped.stderr
    assert not any(pid_alive(pid) for pid in pids if pid is not None)
    assert port_is_free(int(env["EXTRACT_NATS_PORT"]))
    after = run(["status"], env)
    assert after.returncode == 1
    assert after.stdout.count("stopped") == len(PARTS)


def test_up_twice_keeps_the_running_parts(running_stack: tuple[Path, dict[str, str]]) -> None:
    home, env = running_stack
    before = read_pid(home / "run" / "nats.pid")
    again = run(["up"], env)
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stderr
    assert read_pid(home / "run" / "nats.pid") == before


def test_token_verifies_against_the_stack_jwks(tmp_path: Path) -> None:
    env = {**os.environ, "EXTRACT_HOME": str(tmp_path)}
    minted = run(["token", "--principal", "user/alice", "--claim", "group/science"], env)
    assert minted.returncode == 0, minted.stderr
    jwks = JWKSet.from_json((tmp_path / "keys" / "identity.jwks.json").read_text())
    identity = verify_identity_token(minted.stdout.strip(), jwks, issuer="extract-gateway")
    assert identity.principal == "user/alice"
    assert {"group/science", "group/extract-anon"} <= identity.claims


def test_token_refuses_a_malformed_principal(tmp_path: Path) -> None:
    env = {**os.environ, "EXTRACT_HOME": str(tmp_path)}
    refused = run(["token", "--principal", "alice"], env)
    assert refused.returncode == 2
    assert "alice" in refused.stderr


def test_taken_port_is_named_with_its_variable(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "home")
    port = int(env["EXTRACT_NATS_PORT"])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        refused = run(["up"], env)
    assert refused.returncode == 2
    assert f"port {port}" in refused.stderr
    assert "EXTRACT_NATS_PORT" in refused.stderr
    # Nothing was left running by the refused start.
    stack = Stack(StackHome(tmp_path / "home"), environ=env)
    assert all(stack.running(part.name) is None for part in PARTS)


def test_bad_port_variable_is_refused(tmp_path: Path) -> None:
    env = {**stack_env(tmp_path / "home"), "EXTRACT_NATS_PORT": "forty"}
    refused = run(["up"], env)
    assert refused.returncode == 2
    assert "EXTRACT_NATS_PORT='forty'" in refused.stderr
