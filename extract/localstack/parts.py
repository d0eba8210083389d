"""The registry of the local stack's parts. A new service adds one `service_part(...)` line."""

from __future__ import annotations

import json
import secrets
import ssl
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from extract.localstack.home import StackHome
from servicekit.infra import ManagedProcess, NatsServer
from servicekit.infra.seaweed import SeaweedPorts, SeaweedRegion
from servicekit.security.keys import write_file_atomically


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
    name: str,
    default_port: int,
    description: str,
    *,
    module: str | None = None,
    settings: Callable[[StackHome, Ports], Mapping[str, str]] | None = None,
) -> Part:
    """A platform service run as `python -m services.<name>` with local-stack settings,
    plus the environment `settings` gives it."""
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
            **(settings(home, ports) if settings is not None else {}),
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


def catalog_s3_settings(home: StackHome, ports: Ports) -> dict[str, str]:
    """The catalog's default S3 service: SkyStore's `local:edge` proxy, with the admin's key pair
    that the locator writes to $EXTRACT_HOME/s3-credentials when it first starts."""
    return {
        "EXTRACT_CATALOG_S3_ENDPOINT": f"http://127.0.0.1:{ports['skystore-edge']}",
        "EXTRACT_CATALOG_S3_CREDENTIALS": f"file:{home.root / 's3-credentials'}#default",
        "EXTRACT_CATALOG_S3_REGION": "local:edge",
    }


SKYSTORE_REGIONS = {"local:edge": "s3-edge", "local:cloud": "s3-cloud"}


def skystore_locator_settings(home: StackHome, ports: Ports) -> dict[str, str]:
    """The locator learns the local regions (credentials by reference, in secrets/) and writes
    the admin's S3 key pair to $EXTRACT_HOME/s3-credentials."""
    ini = home.secrets / "skystore-regions.ini"
    regions = []
    sections = []
    for region, part in SKYSTORE_REGIONS.items():
        access, secret = home.s3_credentials(region)
        sections.append(
            f"[{region}]\naws_access_key_id = {access}\naws_secret_access_key = {secret}\n"
        )
        url = f"http://127.0.0.1:{SeaweedPorts.from_base(ports[part]).s3}"
        regions.append({"name": region, "endpoint": url, "credentials": f"file:{ini}#{region}"})
    home.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
    ini.write_text("".join(sections))
    ini.chmod(0o600)
    links = [
        {"src": a, "dst": b, "latency_ms": 20.0, "egress_cost": 0.09}
        for a in SKYSTORE_REGIONS
        for b in SKYSTORE_REGIONS
        if a != b
    ]
    regions_file = home.data / "skystore-regions.json"
    home.data.mkdir(parents=True, exist_ok=True)
    regions_file.write_text(json.dumps({"regions": regions, "links": links}, indent=2))
    return {
        "EXTRACT_SKYSTORE_REGIONS_FILE": str(regions_file),
        "EXTRACT_SKYSTORE_ADMIN_CREDENTIALS": str(home.root / "s3-credentials"),
    }


def _seaweed_access(ports: Ports) -> dict[str, dict[str, str]]:
    seaweed = {
        region: SeaweedPorts.from_base(ports[part]) for region, part in SKYSTORE_REGIONS.items()
    }
    return {
        region: {"filer": f"http://127.0.0.1:{p.filer}", "master": f"http://127.0.0.1:{p.master}"}
        for region, p in seaweed.items()
    }


def skystore_proxy_part(name: str, region: str, default_port: int) -> Part:
    """`python -m services.skystore.proxy --region <region>`: the S3 entry of one region."""

    def build(home: StackHome, ports: Ports) -> Unit:
        port = ports[name]
        url = f"http://127.0.0.1:{port}"
        process = ManagedProcess(
            name=name,
            command=[sys.executable, "-m", "services.skystore.proxy", "--region", region],
            log_path=home.log_path(name),
            ready=lambda: _answers_ready(url),
            env={
                "EXTRACT_HOME": str(home.root),
                "EXTRACT_SKYSTORE_PROXY_HOST": "127.0.0.1",
                "EXTRACT_SKYSTORE_PROXY_PORT": str(port),
                "EXTRACT_SKYSTORE_PROXY_LOCATOR_URL": f"http://127.0.0.1:{ports['skystore']}",
                "EXTRACT_SKYSTORE_PROXY_IDENTITY_JWKS": str(home.keys / "identity.jwks.json"),
                # The locator revokes the proxy's cached object records over the stack's NATS.
                "EXTRACT_SKYSTORE_PROXY_NATS_URL": f"nats://127.0.0.1:{ports['nats']}",
                # A key revoked through the gateway stops working within this many seconds.
                "EXTRACT_SKYSTORE_PROXY_KEY_CACHE_SECONDS": "5",
                # Large GETs read the local SeaweedFS volume servers (seaweed_reads.py).
                "EXTRACT_SKYSTORE_PROXY_SEAWEEDFS": json.dumps(_seaweed_access(ports)),
            },
            pid_path=home.pid_path(name),
        )
        return Unit(process, url, [port], lambda: _answers_ready(url))

    variable = f"EXTRACT_{name.upper().replace('-', '_')}_PORT"
    return Part(name, variable, default_port, build, f"SkyStore S3 proxy of {region}")


# Where the gateway finds each upstream it routes to: the local-stack part serving it.
_GATEWAY_UPSTREAMS = {
    "CATALOG": "catalog",
    "SKYSTORE": "skystore-edge",
    "SERVING": "serving",
    "SEMANTIC": "semantic",
    "SCHEDULER": "scheduler",
    "STAGING": "staging",
}


def _answers_ready_over_tls(url: str, ca_file: Path) -> bool:
    try:
        context = ssl.create_default_context(cafile=ca_file)
        return httpx.get(f"{url}/readyz", timeout=2, verify=context).status_code == 200
    except (httpx.HTTPError, OSError):
        return False


def gateway_part(default_port: int) -> Part:
    """`python -m gateway` over TLS with the local CA's certificate, in front of every part
    above it, and its S3 port (one above) in front of the edge SkyStore proxy; its admin
    password is made once and kept in secrets/gateway-admin-password."""

    def build(home: StackHome, ports: Ports) -> Unit:
        port = ports["gateway"]
        url = f"https://localhost:{port}"
        password_file = home.secrets / "gateway-admin-password"
        if not password_file.exists():
            write_file_atomically(
                password_file, secrets.token_urlsafe(24).encode(), mode=0o600, overwrite=False
            )
        env = {
            "EXTRACT_HOME": str(home.root),
            "EXTRACT_GATEWAY_HOST": "127.0.0.1",
            "EXTRACT_GATEWAY_PORT": str(port),
            "EXTRACT_GATEWAY_S3_PORT": str(port + 1),
            "EXTRACT_GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{home.data / 'gateway'}.sqlite",
            "EXTRACT_GATEWAY_NATS_URL": "",
            "EXTRACT_GATEWAY_IDENTITY_KEY": str(home.keys / "identity.key.pem"),
            "EXTRACT_GATEWAY_TLS_CERT": str(home.tls / "localhost.pem"),
            "EXTRACT_GATEWAY_TLS_KEY": str(home.tls / "localhost.key.pem"),
            "EXTRACT_GATEWAY_ADMIN_PASSWORD": password_file.read_text().strip(),
            # S3 keys are issued through the gateway's credential store, by the locator.
            "EXTRACT_GATEWAY_LOCATOR_URL": f"http://127.0.0.1:{ports['skystore']}",
        }
        for upstream, part in _GATEWAY_UPSTREAMS.items():
            target = f"http://127.0.0.1:{ports[part]}" if part in ports else ""
            env[f"EXTRACT_GATEWAY_{upstream}_URL"] = target

        def ready() -> bool:
            return _answers_ready_over_tls(url, home.ca_file)

        process = ManagedProcess(
            name="gateway",
            command=[sys.executable, "-m", "gateway"],
            log_path=home.log_path("gateway"),
            ready=ready,
            env=env,
            pid_path=home.pid_path("gateway"),
        )
        return Unit(process, url, [port, port + 1], ready)

    return Part(
        "gateway", "EXTRACT_GATEWAY_PORT", default_port, build, "TLS gateway (the front door)"
    )


# Order is start order; `extract down` stops in reverse.
PARTS: tuple[Part, ...] = (
    Part("nats", "EXTRACT_NATS_PORT", 14222, nats_unit, "NATS with JetStream"),
    seaweed_part("s3-edge", "local:edge", 18300),
    seaweed_part("s3-cloud", "local:cloud", 18310),
    service_part(
        "skystore",
        8102,
        "SkyStore locator (global S3 namespace)",
        module="services.skystore.locator",
        settings=skystore_locator_settings,
    ),
    skystore_proxy_part("skystore-edge", "local:edge", 8110),
    skystore_proxy_part("skystore-cloud", "local:cloud", 8111),
    # After SkyStore: its default S3 service is the edge proxy.
    service_part("catalog", 8101, "data catalog (Nuvla API)", settings=catalog_s3_settings),
    # Last: it fronts every part above and is ready only when they are.
    gateway_part(8443),
)
