"""Fixtures shared by the WSGI and Flask tests, imported by the modules that use them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pat_middleware import PATAuth, SQLiteStore
from tests.helpers import FAST_ARGON2, FakeClock

#: The realm the WSGI tests' PATAuth answers with.
REALM = "example"


def make_auth(path: Path, clock: FakeClock, **options: Any) -> PATAuth:
    """A PATAuth on a real SQLite file, with fast argon2 and an injected clock."""
    return PATAuth(SQLiteStore(path), hasher=FAST_ARGON2, clock=clock, realm=REALM, **options)


@pytest.fixture
def auth(tmp_path: Path, clock: FakeClock) -> Iterator[PATAuth]:
    auth = make_auth(tmp_path / "tokens.db", clock)
    yield auth
    auth.close()


@pytest.fixture
def token(auth: PATAuth) -> str:
    return auth.manager.create("alice", "ci", ["repo:read"], expires_in=timedelta(days=30)).token
