"""Helpers of the Django tests: the PostgreSQL marks, a fresh engine per test, tokens."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings

from tests.django_settings import IN_CI, POSTGRES_URL

#: A test on the session's PostgreSQL database (alias ``postgres``), in a transaction flushed afterwards.
POSTGRES = pytest.mark.django_db(transaction=True, databases=["default", "postgres"])

#: Skips (on a laptop) when PostgreSQL did not answer when the settings were read;
#: under CI=true the alias is always there, so the tests run and fail if it is down.
postgres_or_skip = pytest.mark.skipif(
    "postgres" not in settings.DATABASES and not IN_CI, reason=f"PostgreSQL is not reachable at {POSTGRES_URL}"
)


@pytest.fixture
def fresh_pat() -> Iterator[None]:
    """A fresh engine for the test (the cached one forgets tokens of other tests) and afterwards."""
    from pat_middleware.django.conf import reset

    reset()
    yield
    reset()
