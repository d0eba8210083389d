import os
import stat
from pathlib import Path

import pytest

from servicekit.errors import ExtractError
from servicekit.security.secretbox import SecretBox, load_or_create_secret_file


def test_a_secret_round_trips_and_is_not_stored_in_clear(tmp_path: Path) -> None:
    box = SecretBox.load_or_create(tmp_path / "keys" / "box.key")
    token = box.encrypt("s3cr3t-value")
    assert "s3cr3t-value" not in token
    assert box.decrypt(token) == "s3cr3t-value"


def test_the_key_file_is_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "box.key"
    token = SecretBox.load_or_create(path).encrypt("x")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert SecretBox.load_or_create(path).decrypt(token) == "x"


def test_a_replaced_key_is_reported_not_a_garbled_secret(tmp_path: Path) -> None:
    token = SecretBox.load_or_create(tmp_path / "a.key").encrypt("x")
    with pytest.raises(ExtractError, match="does not decrypt"):
        SecretBox.load_or_create(tmp_path / "b.key").decrypt(token)


def test_the_first_writer_wins(tmp_path: Path) -> None:
    path = tmp_path / "token"
    assert load_or_create_secret_file(path, b"first") == b"first"
    assert load_or_create_secret_file(path, b"second") == b"first"
