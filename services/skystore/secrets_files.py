"""The bearer token of the locator's internal API: made by the locator, read by its proxies."""

from __future__ import annotations

import secrets
from pathlib import Path

from servicekit.security.secretbox import load_or_create_secret_file

__all__ = ["load_or_create_token", "read_token", "token_matches"]


def load_or_create_token(path: Path) -> str:
    return load_or_create_secret_file(path, secrets.token_urlsafe(32).encode()).decode()


def read_token(path: Path) -> str:
    """The token the locator made; a proxy never makes its own."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise RuntimeError(
            f"no locator token at {path}: start the locator first, or point "
            "EXTRACT_SKYSTORE_PROXY_INTERNAL_TOKEN at its token file"
        ) from None


def token_matches(expected: str, given: str) -> bool:
    return secrets.compare_digest(given.encode(), expected.encode())
