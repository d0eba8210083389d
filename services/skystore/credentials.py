"""Region credentials by reference: `env:PREFIX` or `file:/path#profile` (an ini like ~/.aws)."""

from __future__ import annotations

import configparser
import os
from pathlib import Path

from servicekit.infra.seaweed import S3Endpoint
from services.skystore.schemas import Region

__all__ = ["endpoint_of", "resolve_credentials"]


def resolve_credentials(reference: str) -> tuple[str, str]:
    """(access key, secret key) named by `reference`; ValueError saying what is missing."""
    scheme, _, rest = reference.partition(":")
    if scheme == "env":
        names = (f"{rest}_ACCESS_KEY", f"{rest}_SECRET_KEY")
        missing = [name for name in names if not os.environ.get(name)]
        if missing:
            raise ValueError(f"credentials {reference!r}: set {' and '.join(missing)}")
        return os.environ[names[0]], os.environ[names[1]]
    if scheme == "file":
        path, _, profile = rest.partition("#")
        parser = configparser.ConfigParser()
        if not parser.read(path):
            raise ValueError(f"credentials {reference!r}: cannot read {path}")
        section = profile or "default"
        if not parser.has_section(section):
            raise ValueError(f"credentials {reference!r}: {Path(path).name} has no [{section}]")
        values = parser[section]
        try:
            return values["aws_access_key_id"], values["aws_secret_access_key"]
        except KeyError as exc:
            raise ValueError(f"credentials {reference!r}: [{section}] lacks {exc}") from exc
    raise ValueError(f"credentials {reference!r}: use env:PREFIX or file:/path#profile")


def endpoint_of(region: Region) -> S3Endpoint:
    access, secret = resolve_credentials(region.credentials)
    return S3Endpoint(region.name, region.endpoint, access, secret)
