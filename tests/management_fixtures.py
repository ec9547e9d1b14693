"""Fixtures shared by the management tests, imported by the modules that use them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pat_middleware import MemoryStore, PATAuth, SQLiteStore
from pat_middleware.stores.base import Store
from tests.helpers import FAST_ARGON2, FakeClock
from tests.management_apps import FRAMEWORKS

#: Whether this checkout's SQLiteStore answers the oversight questions (search, the security log).
#: Until it does, the management tests run on the reference MemoryStore (the admin API, the
#: log routes and the page's log section need them); afterwards on SQLite again, unchanged.
SQLITE_HAS_OVERSIGHT = all(callable(getattr(SQLiteStore, name, None)) for name in ("search", "append_log", "read_log"))


def management_store(tmp_path: Path) -> Store:
    """The store the management tests run on: a real SQLite file in ``tmp_path`` (see
    :data:`SQLITE_HAS_OVERSIGHT`), else a MemoryStore."""
    return SQLiteStore(tmp_path / "tokens.db") if SQLITE_HAS_OVERSIGHT else MemoryStore()


def management_store_url(tmp_path: Path) -> str:
    """:func:`management_store` as a ``PAT_STORE_URL`` (for apps in other processes, examples)."""
    return f"sqlite:///{tmp_path / 'tokens.db'}" if SQLITE_HAS_OVERSIGHT else "memory://"


@pytest.fixture
def auth(tmp_path: Path, clock: FakeClock) -> Iterator[PATAuth]:
    """A PATAuth over :func:`management_store` (real SQLite), on ``clock``, with fast argon2."""
    auth = PATAuth(management_store(tmp_path), hasher=FAST_ARGON2, clock=clock)
    yield auth
    auth.close()


@pytest.fixture(params=FRAMEWORKS)
def framework(request: pytest.FixtureRequest) -> str:
    """Each test runs once per framework."""
    return str(request.param)
