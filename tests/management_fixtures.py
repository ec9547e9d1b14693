"""Fixtures shared by the management tests, imported by the modules that use them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pat_middleware import PATAuth, SQLiteStore
from tests.helpers import FAST_ARGON2, FakeClock
from tests.management_apps import FRAMEWORKS


@pytest.fixture
def auth(tmp_path: Path, clock: FakeClock) -> Iterator[PATAuth]:
    """A PATAuth over a real SQLite store in ``tmp_path``, on ``clock``, with fast argon2."""
    auth = PATAuth(SQLiteStore(tmp_path / "tokens.db"), hasher=FAST_ARGON2, clock=clock)
    yield auth
    auth.close()


@pytest.fixture(params=FRAMEWORKS)
def framework(request: pytest.FixtureRequest) -> str:
    """Each test runs once per framework."""
    return str(request.param)
