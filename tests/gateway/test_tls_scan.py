"""An sslyze scan of the running gateway: no SSL 2/3 or TLS 1.0/1.1; TLS 1.2 accepts only the
six ECDHE AEAD suites; the certificate is ECDSA P-256."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servicekit.infra.ports import free_port
from servicekit.testing import ServiceProcess

# sslyze pins an older `cryptography` than the platform needs, so it lives in its own venv,
# made by `make test` (Makefile: TOOLS); EXTRACT_SSLYZE names its executable.
SSLYZE = Path(os.environ.get("EXTRACT_SSLYZE", ".venv-tools/sslyze/bin/sslyze"))

SIX_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
}


@pytest.fixture
def gateway(
    tmp_path: Path, tls_files: tuple[Path, Path, Path], identity_key_file: Path
) -> Iterator[ServiceProcess]:
    ca, cert, key = tls_files
    port = free_port()
    env = {
        "EXTRACT_HOME": str(tmp_path / "home"),
        "EXTRACT_GATEWAY_PORT": str(port),
        "EXTRACT_GATEWAY_TLS_CERT": str(cert),
        "EXTRACT_GATEWAY_TLS_KEY": str(key),
        "EXTRACT_GATEWAY_IDENTITY_KEY": str(identity_key_file),
        "EXTRACT_GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'gw.sqlite'}",
        "EXTRACT_GATEWAY_CATALOG_URL": "",
    }
    process = ServiceProcess(
        "gateway",
        tmp_path,
        env=env,
        port=port,
        scheme="https",
        verify=ssl.create_default_context(cafile=ca),  # type: ignore[arg-type]
    )
    try:
        process.start(timeout=60)
        yield process
    finally:
        process.stop()


def _scan(port: int, out: Path) -> dict[str, Any]:
    if not SSLYZE.exists():
        pytest.fail(
            f"sslyze not found at {SSLYZE}: run `make test` (it installs it) or set EXTRACT_SSLYZE"
        )
    command = [
        str(SSLYZE),
        "--quiet",
        f"--json_out={out}",
        "--sslv2",
        "--sslv3",
        "--tlsv1",
        "--tlsv1_1",
        "--tlsv1_2",
        "--tlsv1_3",
        "--certinfo",
        f"localhost:{port}{{127.0.0.1}}",
    ]
    subprocess.run(command, check=True, timeout=120, capture_output=True)
    [server] = json.loads(out.read_text())["server_scan_results"]
    assert server["scan_status"] == "COMPLETED", server
    return server["scan_result"]


def _accepted(scans: dict[str, Any], protocol: str) -> set[str]:
    attempt = scans[f"{protocol}_cipher_suites"]
    assert attempt["status"] == "COMPLETED", (protocol, attempt.get("error_trace"))
    return {suite["cipher_suite"]["name"] for suite in attempt["result"]["accepted_cipher_suites"]}


def test_sslyze_finds_only_modern_tls_and_an_ecdsa_p256_certificate(
    gateway: ServiceProcess, tmp_path: Path
) -> None:
    scans = _scan(gateway.port, tmp_path / "sslyze.json")
    for legacy in ("ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1"):
        assert _accepted(scans, legacy) == set(), legacy
    tls12 = _accepted(scans, "tls_1_2")
    assert tls12, "TLS 1.2 must be offered"
    assert tls12 <= SIX_SUITES, tls12 - SIX_SUITES
    assert _accepted(scans, "tls_1_3"), "TLS 1.3 must be offered"

    info = scans["certificate_info"]
    assert info["status"] == "COMPLETED", info.get("error_trace")
    leaf = info["result"]["certificate_deployments"][0]["received_certificate_chain"][0]
    assert leaf["public_key"]["algorithm"] == "ECPublicKey", leaf["public_key"]
    assert leaf["public_key"]["ec_curve_name"] == "secp256r1", leaf["public_key"]
