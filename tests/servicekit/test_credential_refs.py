from pathlib import Path

import pytest

from servicekit.credential_refs import resolve_credentials


def test_a_profile_of_an_aws_style_file(tmp_path: Path) -> None:
    ini = tmp_path / "credentials"
    ini.write_text(
        "[default]\naws_access_key_id = AK1\naws_secret_access_key = s%cret\n"
        "[edge]\naws_access_key_id = AK2\naws_secret_access_key = S2\n"
    )
    assert resolve_credentials(f"file:{ini}") == ("AK1", "s%cret")
    assert resolve_credentials(f"file:{ini}#edge") == ("AK2", "S2")


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGION_ACCESS_KEY", "AK")
    monkeypatch.setenv("REGION_SECRET_KEY", "SK")
    assert resolve_credentials("env:REGION") == ("AK", "SK")


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("env:NOWHERE", "set NOWHERE_ACCESS_KEY and NOWHERE_SECRET_KEY"),
        ("file:/does/not/exist", "cannot read /does/not/exist"),
        ("plain-secret", "use env:PREFIX or file:/path#profile"),
    ],
)
def test_what_is_missing_is_named(reference: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_credentials(reference)


def test_a_missing_profile_or_key_is_named(tmp_path: Path) -> None:
    ini = tmp_path / "credentials"
    ini.write_text("[default]\naws_access_key_id = AK1\n")
    with pytest.raises(ValueError, match=r"has no \[other\]"):
        resolve_credentials(f"file:{ini}#other")
    with pytest.raises(ValueError, match="lacks 'aws_secret_access_key'"):
        resolve_credentials(f"file:{ini}")
