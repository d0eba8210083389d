"""Gateway benchmark: a service directly vs through the gateway vs through NGINX, in one run.

    python -m bench.gateway [--requests 2000] [--concurrency 1,16,64]

Starts the catalog, `python -m gateway` (TLS, local CA, ECDSA P-256; one uvicorn process) in
front of it, and NGINX configured as a TLS reverse proxy to the same catalog with the same
certificate, suites and one worker process. NGINX is the one on PATH, else the Debian package
fetched without root into `.venv-tools/nginx/` (`apt-get download nginx` + `dpkg-deb -x`, once);
when neither works every table says "NGINX ABSENT" (nothing is skipped silently). Every path
is driven by its own httpx client, with keep-alive and with a new TLS connection per request,
at each concurrency; up to concurrency 16 the paths take turns (ten rotations), so that a change
in the load of the shared machine during a level does not fall on one path only. Also measures
the cost of signing one critical response (detached JWS ES256).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench._stats import Result, print_table
from gateway.signing import ResponseSigner
from servicekit.infra.ports import free_port
from servicekit.security import (
    MODERN_TLS12_CIPHERS,
    JWKSet,
    LocalCA,
    SigningKey,
    issue_identity_token,
    verify_detached,
    write_jwks,
)
from servicekit.testing import ServiceProcess

PATH = "/api/cloud-entry-point"
NGINX_ABSENT = (
    "NGINX ABSENT: no nginx on PATH or at /usr/sbin/nginx, and none could be fetched into "
    ".venv-tools/nginx (apt-get download nginx; see the reason above); the NGINX rows and the "
    "gateway-vs-NGINX ratios are NOT measured in this run"
)
NGINX_TOOLS = Path(__file__).resolve().parent.parent / ".venv-tools" / "nginx"
# Debian 12's nginx-light is a metapackage; the binary is in nginx (older releases: -light).
NGINX_PACKAGES = ("nginx", "nginx-light")
NGINX_CONF = """
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {root}/body; proxy_temp_path {root}/proxy;
  fastcgi_temp_path {root}/fastcgi; uwsgi_temp_path {root}/uwsgi; scgi_temp_path {root}/scgi;
  upstream catalog {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert}; ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3; ssl_ciphers {ciphers}; ssl_prefer_server_ciphers on;
    keepalive_requests 100000;
    location / {{
      proxy_pass http://catalog; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host $host; proxy_set_header X-Forwarded-For $remote_addr;
    }}
  }}
}}
"""


class Driver:
    """One path driven by its own httpx client (keep-alive or a new connection per request)."""

    def __init__(
        self,
        url: str,
        *,
        concurrency: int,
        verify: ssl.SSLContext | bool,
        keepalive: bool,
        headers: dict[str, str],
    ) -> None:
        self.url = url
        self.concurrency = concurrency
        limits = httpx.Limits(
            max_connections=concurrency, max_keepalive_connections=concurrency if keepalive else 0
        )
        self.client = httpx.AsyncClient(verify=verify, limits=limits, timeout=30, headers=headers)
        self.seconds = 0.0
        self.latencies: list[float] = []

    async def warm_up(self) -> None:
        """Pools, caches, TLS sessions."""
        for _ in range(50):
            (await self.client.get(self.url)).raise_for_status()

    async def run(self, total: int) -> None:
        """`total` more GETs by `concurrency` workers; their time and latencies add up."""
        remaining = total

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                response = await self.client.get(self.url)
                self.latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(f"{self.url}: {response.status_code} {response.text[:200]}")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        self.seconds += time.perf_counter() - start


async def drive_interleaved(drivers: list[Driver], total: int, blocks: int) -> None:
    """Every path gets `total` requests, in `blocks` turns taken in rotation, so a change of
    the machine's load in the middle of a level weighs on every path alike."""
    try:
        if blocks == 1:  # one path after the other, each warmed up just before its run
            for driver in drivers:
                await driver.warm_up()
                await driver.run(total)
                await driver.client.aclose()
            return
        for driver in drivers:
            await driver.warm_up()
        for block in range(blocks):
            share = total // blocks + (1 if block < total % blocks else 0)
            for driver in drivers:
                await driver.run(share)
    finally:
        for driver in drivers:
            await driver.client.aclose()


def _blocks(concurrency: int, total: int) -> int:
    # Turns of at least 50 requests and 4 per worker. Above 16 workers a turn lasts long
    # enough for the other paths' idle keep-alive connections to outlive uvicorn's 5 s (the
    # gateway's and the catalog's, not NGINX's), so those levels run each path at once.
    if concurrency > 16:
        return 1
    return max(1, min(10, total // max(50, 4 * concurrency)))


def _fetch_nginx() -> None:
    """Unpack the first of NGINX_PACKAGES that holds the binary into NGINX_TOOLS (no root)."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        print("nginx: apt-get/dpkg-deb not found; cannot fetch the package", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory(prefix="nginx-deb-") as temp:
        for package in NGINX_PACKAGES:
            fetched = subprocess.run(
                ["apt-get", "download", package], cwd=temp, capture_output=True, text=True
            )
            debs = list(Path(temp).glob(f"{package}_*.deb"))
            if fetched.returncode != 0 or not debs:
                print(
                    f"nginx: apt-get download {package} failed: {fetched.stderr.strip()}",
                    file=sys.stderr,
                )
                continue
            subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(NGINX_TOOLS)], check=True)
            if (NGINX_TOOLS / "usr" / "sbin" / "nginx").exists():
                return


def nginx_binary() -> str | None:
    """nginx on PATH, else the one unpacked into NGINX_TOOLS (fetched on first use), if it runs."""
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if binary is None:
        unpacked = NGINX_TOOLS / "usr" / "sbin" / "nginx"
        if not unpacked.exists():
            _fetch_nginx()
        binary = str(unpacked) if unpacked.exists() else None
    if binary is None:
        return None
    version = subprocess.run([binary, "-v"], capture_output=True, text=True)
    if version.returncode != 0:
        # Typically a shared library the unpacked package needs is not installed.
        print(f"nginx: {binary} does not run: {version.stderr.strip()}", file=sys.stderr)
        return None
    print(f"NGINX: {binary} ({version.stderr.strip()}), worker_processes 1")
    return binary


@contextmanager
def nginx(root: Path, upstream: int, cert: Path, key: Path) -> Iterator[int | None]:
    binary = nginx_binary()
    if binary is None:
        print(NGINX_ABSENT, file=sys.stderr)
        yield None
        return
    port = free_port()
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (root / name).mkdir(parents=True, exist_ok=True)
    conf = root / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            root=root,
            upstream=upstream,
            port=port,
            cert=cert,
            key=key,
            ciphers=":".join(MODERN_TLS12_CIPHERS),
        )
    )
    # -e: nginx opens its compiled-in error log (/var/log/nginx) before reading the config.
    error_log, prefix = str(root / "nginx-error.log"), str(root)
    process = subprocess.Popen(
        [binary, "-e", error_log, "-c", str(conf), "-p", prefix, "-g", "daemon off;"]
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"https://127.0.0.1:{port}/healthz", verify=False, timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"nginx did not start; see {root}/nginx-error.log") from None
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def signing_cost(count: int = 2000) -> list[Result]:
    signer = ResponseSigner(SigningKey.generate())
    body = b'{"route": [' + b'{"lat": 45.44, "lon": 12.31},' * 30 + b"{}]}"
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        signature = signer.sign(body)
        latencies.append(time.perf_counter() - started)
    jwks: JWKSet = signer.jwks
    verify_latencies = []
    for _ in range(count):
        started = time.perf_counter()
        verify_detached(body, signature, jwks)
        verify_latencies.append(time.perf_counter() - started)
    total = sum(latencies)
    return [
        Result(f"sign {len(body)} B response (JWS ES256)", count, total, latencies),
        Result("verify it against the JWKS", count, sum(verify_latencies), verify_latencies),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", default="1,16,64")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as temp:
        root = Path(temp)
        ca = LocalCA.load_or_create(root / "tls")
        cert, key = ca.issue_server_certificate(["127.0.0.1", "localhost"], root / "tls", "gw")
        identity = SigningKey.generate()
        (root / "identity.key.pem").write_bytes(identity.to_pem())
        write_jwks(root / "identity.jwks.json", [identity])
        context = ssl.create_default_context(cafile=ca.cert_path)

        catalog_port, gateway_port = free_port(), free_port()
        catalog = ServiceProcess(
            "services.catalog",
            root,
            env={
                "EXTRACT_HOME": str(root / "home"),
                "EXTRACT_CATALOG_PORT": str(catalog_port),
                "EXTRACT_CATALOG_DATABASE_URL": f"sqlite+aiosqlite:///{root / 'catalog.sqlite'}",
                "EXTRACT_CATALOG_IDENTITY_JWKS": str(root / "identity.jwks.json"),
                "EXTRACT_CATALOG_NATS_URL": "",
                "EXTRACT_CATALOG_LOG_LEVEL": "warning",
            },
            port=catalog_port,
        )
        gateway = ServiceProcess(
            "gateway",
            root,
            env={
                "EXTRACT_HOME": str(root / "home"),
                "EXTRACT_GATEWAY_TLS_CERT": str(cert),
                "EXTRACT_GATEWAY_TLS_KEY": str(key),
                "EXTRACT_GATEWAY_IDENTITY_KEY": str(root / "identity.key.pem"),
                "EXTRACT_GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{root / 'gw.sqlite'}",
                "EXTRACT_GATEWAY_NATS_URL": "",
                "EXTRACT_GATEWAY_RATE_PER_IP": "0",
                "EXTRACT_GATEWAY_LOG_LEVEL": "warning",
                "EXTRACT_GATEWAY_PORT": str(gateway_port),
                "EXTRACT_GATEWAY_CATALOG_URL": f"http://127.0.0.1:{catalog_port}",
            },
            port=gateway_port,
            scheme="https",
            verify=context,  # type: ignore[arg-type]
        )
        catalog.start(timeout=60)
        gateway.start(timeout=60)
        print(
            "gateway: python -m gateway, one uvicorn process (uvloop, httptools), "
            "rate limits off, log level warning; catalog: one uvicorn process, SQLite"
        )
        try:
            with nginx(root / "nginx", catalog.port, cert, key) as nginx_port:
                # Directly and through NGINX (which authenticates no one), the caller brings the
                # identity token that the gateway mints itself.
                token = issue_identity_token(identity, "user/bench", ttl=3600)
                direct = {"authorization": f"Bearer {token}"}
                targets: list[tuple[str, str, ssl.SSLContext | bool, bool]] = [
                    ("direct to catalog (HTTP, keep-alive)", catalog.url, False, True),
                    ("gateway TLS, keep-alive", gateway.url, context, True),
                    ("gateway TLS, new connection each", gateway.url, context, False),
                ]
                if nginx_port is not None:
                    url = f"https://127.0.0.1:{nginx_port}"
                    targets += [
                        ("nginx TLS, keep-alive", url, context, True),
                        ("nginx TLS, new connection each", url, context, False),
                    ]
                for level in levels:
                    total = args.requests if level > 1 else args.requests // 2
                    drivers = [
                        Driver(
                            base + PATH,
                            concurrency=level,
                            verify=verify,
                            keepalive=keepalive,
                            headers={} if base == gateway.url else direct,
                        )
                        for _, base, verify, keepalive in targets
                    ]
                    blocks = _blocks(level, total)
                    asyncio.run(drive_interleaved(drivers, total, blocks))
                    results = [
                        Result(name, len(d.latencies), d.seconds, d.latencies)
                        for (name, *_), d in zip(targets, drivers, strict=True)
                    ]
                    turns = f", paths in {blocks} rotating turns" if blocks > 1 else ""
                    print(f"\nGET {PATH}, concurrency {level}{turns}")
                    print_table(results)
                    if nginx_port is None:
                        print(NGINX_ABSENT)
        finally:
            gateway.stop()
            catalog.stop()
    print("\nsigning cost per critical response")
    print_table(signing_cost())


if __name__ == "__main__":
    main()
