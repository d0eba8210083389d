from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from stack_runner import started_stack


@pytest.fixture
def running_stack(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A stack of its own, for tests that stop or restart it."""
    with started_stack(tmp_path / "home") as stack:
        yield stack


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """One stack for a module's tests that only use it."""
    with started_stack(tmp_path_factory.mktemp("stack") / "home") as stack:
        yield stack
