"""The registry of the local stack's parts. A new service adds one `service_part(...)` line."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

from extract.localstack.home import StackHome
from servicekit.infra import ManagedProcess, NatsServer
from servicekit.infra.seaweed import SeaweedPorts, SeaweedRegion


@dataclass(frozen=True)
class Unit:
    """One running part: its process, where it answers, which ports it holds."""

    process: ManagedProcess
    url: str
    ports: list[int]
    ready: Callable[[], bool]


Ports = Mapping[str, int]


@dataclass(frozen=True)
class Part:
    name: str
    port_variable: str
    default_port: int
    build: Callable[[StackHome, Ports], Unit]
    description: str


def nats_unit(home: StackHome, ports: Ports) -> Unit:
    server = NatsServer(
        port=ports["nats"],
        store_dir=home.data / "nats",
        log_path=home.log_path("nats"),
        pid_path=home.pid_path("nats"),
    )
    server.store_dir.mkdir(parents=True, exist_ok=True)
    return Unit(server.process, server.url, [server.port], server.ready)


def seaweed_part(part: str, region: str, default_port: int) -> Part:
    def build(home: StackHome, ports: Ports) -> Unit:
        access, secret = home.s3_credentials(region)
        seaweed = SeaweedRegion(
            region=region,
            ports=SeaweedPorts.from_base(ports[part]),
            data_dir=home.data / part,
            log_path=home.log_path(part),
            access_key=access,
            secret_key=secret,
            pid_path=home.pid_path(part),
        )
        seaweed.write_config()
        return Unit(seaweed.process, seaweed.endpoint.url, seaweed.ports.all(), seaweed.ready)

    variable = f"EXTRACT_{part.upper().replace('-', '_')}_PORT"
    return Part(part, variable, default_port, build, f"S3 region {region} (SeaweedFS)")


def _answers_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def service_part(
    name: str, default_port: int, description: str, *, module: str | None = None
) -> Part:
    """A platform service run as `python -m services.<name>` with local-stack settings."""
    prefix = f"EXTRACT_{name.upper()}_"
    module = module or f"services.{name}"

    def build(home: StackHome, ports: Ports) -> Unit:
        port = ports[name]
        url = f"http://127.0.0.1:{port}"
        env = {
            "EXTRACT_HOME": str(home.root),
            f"{prefix}HOST": "127.0.0.1",
            f"{prefix}PORT": str(port),
            f"{prefix}DATABASE_URL": f"sqlite+aiosqlite:///{home.data / name}.sqlite",
            f"{prefix}NATS_URL": f"nats://127.0.0.1:{ports['nats']}",
            f"{prefix}IDENTITY_JWKS": str(home.keys / "identity.jwks.json"),
        }
        process = ManagedProcess(
            name=name,
            command=[sys.executable, "-m", module],
            log_path=home.log_path(name),
            ready=lambda: _answers_ready(url),
            env=env,
            pid_path=home.pid_path(name),
        )
        return Unit(process, url, [port], lambda: _answers_ready(url))

    return Part(name, f"{prefix}PORT", default_port, build, description)


# Order is start order; `extract down` stops in reverse.
PARTS: tuple[Part, ...] = (
    Part("nats", "EXTRACT_NATS_PORT", 14222, nats_unit, "NATS with JetStream"),
    seaweed_part("s3-edge", "local:edge", 18300),
    seaweed_part("s3-cloud", "local:cloud", 18310),
    service_part("catalog", 8101, "data catalog (Nuvla API)"),
)
