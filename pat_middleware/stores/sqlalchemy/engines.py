"""Database URLs and the engines the store creates."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import make_url
from sqlalchemy.engine import Engine, create_engine
from sqlalchemy.engine.url import URL
from sqlalchemy.pool import StaticPool

__all__ = ["async_available", "engine_arguments", "normalise_url", "parse_database_url", "sync_twin"]

#: Sync driver to use next to an async one on the same database.
_SYNC_TWIN = {"psycopg_async": "psycopg", "psycopg": "psycopg", "asyncpg": "psycopg", "aiosqlite": "pysqlite"}


def parse_database_url(url: str, bad_url: Callable[[str], ValueError]) -> URL:
    """``url`` parsed, with its dialect and driver found; ``bad_url(problem)`` is
    raised for a malformed URL or an unknown dialect (a missing driver module
    stays a ``ModuleNotFoundError``). The URL is never echoed: it may hold a password."""
    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except sa_exc.NoSuchModuleError:
        raise bad_url(f"SQLAlchemy has no database dialect {url.partition(':')[0]!r}") from None
    except (sa_exc.ArgumentError, ValueError):
        raise bad_url("malformed database URL (check the host, port and query)") from None
    return parsed


def normalise_url(url: str | URL) -> URL:
    """A bare ``postgresql://`` (or ``postgres://``) URL means psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _is_memory_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def engine_arguments(url: URL, options: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {"pool_pre_ping": True, "hide_parameters": True}
    if _is_memory_sqlite(url):  # one shared in-memory database for every thread
        merged.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    merged.update(options)
    return merged


def sync_twin(url: URL, options: Mapping[str, Any]) -> tuple[Engine | None, str]:
    """A sync engine on the database of the async ``url``, or None and why not."""
    driver = url.get_driver_name()
    twin = _SYNC_TWIN.get(driver)
    if twin is None or _is_memory_sqlite(url):
        return None, f"no sync driver is known for {url.drivername!r}"
    sync_url = url.set(drivername=f"{url.get_backend_name()}+{twin}")
    try:
        return create_engine(sync_url, **engine_arguments(sync_url, options)), ""
    except ImportError as error:
        return None, f"the sync driver for {sync_url.drivername!r} is not installed ({error})"


def async_available() -> bool:
    return importlib.util.find_spec("greenlet") is not None
