"""S3 key pairs by reference, so configuration names where a secret is rather than holding it:
`env:PREFIX` (PREFIX_ACCESS_KEY / PREFIX_SECRET_KEY) or `file:/path#profile` (an ini file like
~/.aws/credentials; profile defaults to `default`)."""

from __future__ import annotations

import configparser
import os
from pathlib import Path

__all__ = ["resolve_credentials"]


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
        parser = configparser.ConfigParser(interpolation=None)
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
