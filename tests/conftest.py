"""Shared fixtures: real Redis and PostgreSQL, isolated per test session.

Services are found at ``PAT_TEST_REDIS_URL`` (default redis://127.0.0.1:6379/0)
and ``PAT_TEST_POSTGRES_URL`` (default postgresql://postgres@127.0.0.1:5432/test).
When one is unreachable its tests are skipped with the reason, except under
``CI=true``, where they fail: CI must never silently skip them.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

# Fixture modules imported by test modules: rewrite their asserts too.
pytest.register_assert_rewrite("tests.wsgi_fixtures", "tests.management_fixtures")

from tests.helpers import FakeClock  # noqa: E402

REDIS_URL = os.environ.get("PAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("PAT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
#: One id per test session: Redis key prefixes and database names use it.
RUN_ID = uuid.uuid4().hex[:10]


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), 1.0):
            return True
    except OSError:
        return False


def skip_or_fail(reason: str) -> None:
    """Skip with ``reason`` on a laptop; fail under CI=true."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: service tests must not skip)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the real Redis; skips (or fails under CI) when unreachable."""
    if not _reachable(REDIS_URL, 6379):
        skip_or_fail(f"Redis is not reachable at {REDIS_URL}")
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to this test; every key under it is deleted afterwards."""
    import redis

    prefix = f"pat-test:{RUN_ID}:{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session (psycopg 3 URL), dropped afterwards."""
    if not _reachable(POSTGRES_URL, 5432):
        skip_or_fail(f"PostgreSQL is not reachable at {POSTGRES_URL}")
    import psycopg

    admin_url = POSTGRES_URL
    name = f"pat_test_{RUN_ID}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(admin_url)
    url = urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
    yield url
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlalchemy_postgres_url(postgres_url: str) -> str:
    """The session database as a SQLAlchemy URL (psycopg 3 driver)."""
    return postgres_url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when told to (epoch seconds; see tests/helpers.py)."""
    return FakeClock()
