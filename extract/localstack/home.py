"""The local stack's state directory ($EXTRACT_HOME, default ./.extract) and what lives in it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from servicekit.infra.seaweed import S3Endpoint, new_credentials
from servicekit.security import LocalCA, SigningKey, load_or_create_signing_key, write_jwks
from servicekit.settings import extract_home


@dataclass(frozen=True)
class StackHome:
    root: Path

    @classmethod
    def from_env(cls) -> StackHome:
        return cls(extract_home())

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def tls(self) -> Path:
        return self.root / "tls"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    def log_path(self, part: str) -> Path:
        return self.logs / f"{part}.log"

    def pid_path(self, part: str) -> Path:
        return self.run / f"{part}.pid"

    def prepare(self) -> None:
        """Create the tree, keys, CA and credentials on first start; reuse them after."""
        for directory in (self.logs, self.run, self.data, self.keys, self.tls):
            directory.mkdir(parents=True, exist_ok=True)
        self.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_jwks(self.keys / "identity.jwks.json", [self.identity_key()])
        ca = LocalCA.load_or_create(self.tls)
        ca.issue_server_certificate(["localhost", "127.0.0.1", "::1"], self.tls, "localhost")

    def identity_key(self) -> SigningKey:
        return load_or_create_signing_key(self.keys / "identity.key.pem")

    @property
    def ca_file(self) -> Path:
        return self.tls / "ca.pem"

    def s3_credentials(self, region: str) -> tuple[str, str]:
        """The root key pair of one local S3 region, made once and kept in secrets/."""
        path = self.secrets / "s3-regions.json"
        known = json.loads(path.read_text()) if path.exists() else {}
        if region not in known:
            known[region] = list(new_credentials())
            path.write_text(json.dumps(known, indent=2))
            os.chmod(path, 0o600)
        access, secret = known[region]
        return access, secret

    def s3_endpoint(self, region: str, url: str) -> S3Endpoint:
        return S3Endpoint(region, url, *self.s3_credentials(region))
