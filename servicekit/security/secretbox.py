"""Secrets at rest: a Fernet key in a file (made 0600 on first use) that encrypts the secrets a
service must keep readable (S3 secret keys, webhook secrets) before they reach its database."""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from servicekit.errors import ExtractError
from servicekit.security.keys import write_file_atomically

__all__ = ["SecretBox", "load_or_create_secret_file"]


def load_or_create_secret_file(path: Path, make: bytes) -> bytes:
    """The bytes in `path`, or `make` written there (mode 0600) if it does not exist yet.

    Concurrent first starts agree: the file is created exclusively and the loser reads it.
    """
    with suppress(FileNotFoundError):
        return path.read_bytes().strip()
    try:
        write_file_atomically(path, make, mode=0o600, overwrite=False)
    except FileExistsError:
        return path.read_bytes().strip()
    return make


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def load_or_create(cls, path: Path) -> SecretBox:
        return cls(load_or_create_secret_file(path, Fernet.generate_key()))

    def encrypt(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ExtractError(
                "a stored secret does not decrypt with this service's secrets key: "
                "was the key file replaced?"
            ) from None
