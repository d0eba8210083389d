"""The public surface of servicekit: every exported name resolves, and nothing is loaded early."""

from __future__ import annotations

import subprocess
import sys

import servicekit


def test_every_exported_name_resolves() -> None:
    for name in servicekit.__all__:
        assert getattr(servicekit, name) is not None, name


def test_unknown_name_is_an_attribute_error() -> None:
    try:
        servicekit.DoesNotExist  # noqa: B018
    except AttributeError as exc:
        assert "DoesNotExist" in str(exc)
    else:
        raise AssertionError("servicekit.DoesNotExist resolved")


def test_importing_infra_loads_no_heavy_dependency() -> None:
    code = (
        "import sys, servicekit.infra; "
        "print(sorted(m for m in ('aiobotocore', 'nats', 'sqlalchemy', 'fastapi') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
