"""Token stores: the protocol, the embedded backends and :func:`store_from_url`.

``SQLAlchemyStore`` (``stores.sqlalchemy``) and ``RedisStore`` (``stores.redis``)
need optional dependencies and are imported only when asked for.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pat_middleware.stores.base import AsyncStore, Store
from pat_middleware.stores.memory import MemoryStore
from pat_middleware.stores.sqlite import SQLiteStore

__all__ = ["AsyncStore", "MemoryStore", "SQLiteStore", "Store", "store_from_url"]

ACCEPTED_URLS = (
    "memory://, sqlite:///relative/path.db, sqlite:////absolute/path.db, sqlite:///:memory:, "
    "postgresql://... (psycopg 3), any SQLAlchemy dialect+driver://..., "
    "redis://..., rediss://..., unix://..."
)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")
#: Bare dialect names (no ``+driver``) handed to SQLAlchemy.
_SQLALCHEMY_DIALECTS = frozenset({"postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql"})
_REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})


def _bad_url(problem: str) -> ValueError:
    # The URL itself is never echoed: it may carry a password.
    return ValueError(f"{problem}; accepted store URLs: {ACCEPTED_URLS}")


def _sqlite_path(rest: str) -> str:
    """The file path of ``sqlite://<rest>`` (SQLAlchemy's conventions)."""
    if not rest:
        return ":memory:"
    if not rest.startswith("/"):
        raise _bad_url("a sqlite URL has no host: use three slashes for a relative path")
    if "?" in rest or "#" in rest:
        raise _bad_url("a sqlite store URL takes no query or fragment; pass options as arguments")
    path = rest[1:]
    if not path:
        raise _bad_url("the sqlite URL has no database path")
    return path


def _sqlalchemy_url(scheme: str, url: str) -> str:
    """``url`` with ``postgres``/``postgresql`` (no driver) mapped to ``postgresql+psycopg``."""
    dialect, _, driver = scheme.partition("+")
    if dialect in ("postgres", "postgresql"):
        dialect, driver = "postgresql", driver or "psycopg"
    full = f"{dialect}+{driver}" if driver else dialect
    return full + url[len(scheme) :]


@contextmanager
def _optional(extra: str, packages: frozenset[str], what: str) -> Iterator[None]:
    """Turn a missing third-party module into an ImportError that names the extra."""
    try:
        yield
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if not missing or missing == "pat_middleware":
            raise
        hint = f'pip install "pat-middleware[{extra}]"'
        if missing in packages:
            message = f"{what} needs the optional dependency {missing!r}: {hint}"
        else:
            message = f"{what} needs the driver {missing!r}, which is not installed (tested: {hint})"
        raise ImportError(message, name=missing) from exc


def store_from_url(url: str, **options: Any) -> Store:
    """A store for ``url``; ``options`` go to the store's constructor.

    ``memory://`` gives a :class:`MemoryStore`; ``sqlite:///relative.db``,
    ``sqlite:////absolute.db`` and ``sqlite:///:memory:`` a :class:`SQLiteStore`;
    ``redis://``, ``rediss://`` and ``unix://`` a ``RedisStore``; any other
    SQLAlchemy URL (``postgresql://`` means ``postgresql+psycopg://``) a
    ``SQLAlchemyStore``. Raises ValueError for anything else and ImportError,
    naming the extra to install, when an optional dependency is missing.
    """
    match = _SCHEME.match(url) if isinstance(url, str) else None
    if match is None:
        raise _bad_url("not a store URL")
    scheme = match.group(1).lower()
    rest = url[match.end() :]
    if scheme == "memory":
        if rest:
            raise _bad_url("memory:// takes nothing after the scheme")
        return MemoryStore(**options)
    if scheme == "sqlite":
        return SQLiteStore(_sqlite_path(rest), **options)
    if scheme in _REDIS_SCHEMES:
        with _optional("redis", frozenset({"redis", "hiredis"}), "RedisStore"):
            from pat_middleware.stores.redis import RedisStore

            store: Store = RedisStore.from_url(url, **options)
        return store
    if "+" in scheme or scheme in _SQLALCHEMY_DIALECTS:
        with _optional("sqlalchemy", frozenset({"sqlalchemy", "psycopg"}), "SQLAlchemyStore"):
            from pat_middleware.stores.sqlalchemy import SQLAlchemyStore, parse_database_url

            store = SQLAlchemyStore(parse_database_url(_sqlalchemy_url(scheme, url), _bad_url), **options)
        return store
    raise _bad_url(f"unsupported store URL scheme {scheme!r}")
