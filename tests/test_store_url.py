"""store_from_url: every accepted URL form, and clear errors for the rest."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
from store_contract import make_record

from pat_middleware.stores import MemoryStore, SQLiteStore, Store, store_from_url
from pat_middleware.stores import _sqlalchemy_url as sqlalchemy_url


def _roundtrip(store: Store) -> None:
    record = make_record()
    store.insert(record)
    assert store.get(record.id) == record


# -- embedded ------------------------------------------------------------------


@pytest.mark.parametrize("url", ["memory://", "MEMORY://", "Memory://"])
def test_memory(url: str) -> None:
    store = store_from_url(url)
    assert isinstance(store, MemoryStore)
    _roundtrip(store)


@pytest.mark.parametrize(
    ("url", "path", "created"),
    [
        ("sqlite:///sub/tokens.db", "sub/tokens.db", "sub/tokens.db"),
        ("sqlite:///{tmp}/abs.db", "{tmp}/abs.db", "abs.db"),  # four slashes: absolute
        ("sqlite:///:memory:", ":memory:", None),
        ("sqlite://", ":memory:", None),
        ("SQLITE:///:memory:", ":memory:", None),
    ],
)
def test_sqlite(url: str, path: str, created: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    url, path = url.format(tmp=tmp_path), path.format(tmp=tmp_path)
    store = store_from_url(url)
    assert isinstance(store, SQLiteStore)
    assert store.path == path
    _roundtrip(store)
    store.close()
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == ([created] if created else [])


def test_options_reach_the_constructor() -> None:
    store = store_from_url("sqlite:///:memory:", table="custom_tokens", timeout=1.5)
    assert isinstance(store, SQLiteStore)
    assert store.table == "custom_tokens"
    _roundtrip(store)
    store.close()


# -- errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "",
        "tokens.db",
        "memory:",
        "memory://something",
        "sqlite:/tokens.db",
        "sqlite://host/tokens.db",
        "sqlite://tokens.db",
        "sqlite:///",
        "sqlite:///tokens.db?mode=ro",
        "sqlite:///tokens.db#frag",
        "http://example.com/tokens",
        "ftp://user:hunter2@example.com/",
        "://nothing",
        "1sqlite:///x.db",
        "foo+bar://user:hunter2@x/db",  # no such SQLAlchemy dialect
        "mysql+nosuchdriver://user:hunter2@x/db",
        "postgresql://user:hunter2@h:notaport/db",
    ],
)
def test_bad_urls_are_value_errors(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        store_from_url(url)
    message = str(caught.value)
    assert "memory://" in message and "sqlite:///" in message and "redis://" in message
    assert "hunter2" not in message


def test_non_string_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        store_from_url(None)  # type: ignore[arg-type]


def test_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        store_from_url("memory://", nonsense=1)


# -- SQLAlchemy --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("PostgreSQL://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("mysql://u@h/db", "mysql://u@h/db"),
        ("mysql+pymysql://u@h/db", "mysql+pymysql://u@h/db"),
        ("sqlite+pysqlite:///x.db", "sqlite+pysqlite:///x.db"),
    ],
)
def test_sqlalchemy_url_mapping(url: str, expected: str) -> None:
    scheme = url.split("://", 1)[0].lower()
    assert sqlalchemy_url(scheme, url) == expected


def test_sqlite_pysqlite_goes_to_sqlalchemy(tmp_path: Path) -> None:
    from pat_middleware.stores.sqlalchemy import SQLAlchemyStore

    store = store_from_url(f"sqlite+pysqlite:///{tmp_path / 'sa.db'}")
    assert isinstance(store, SQLAlchemyStore)
    _roundtrip(store)
    store.close()


@pytest.mark.postgres
def test_postgresql_without_driver_uses_psycopg(postgres_url: str) -> None:
    from pat_middleware.stores.sqlalchemy import SQLAlchemyStore

    assert postgres_url.startswith("postgresql://")
    table = f"url_test_{uuid.uuid4().hex[:8]}"
    store = store_from_url(postgres_url, table_name=table, create_schema=True)
    assert isinstance(store, SQLAlchemyStore)
    _roundtrip(store)  # psycopg2 is not installed: only psycopg 3 can make this work
    store.close()


def test_missing_database_driver_is_a_clear_import_error() -> None:
    with pytest.raises(ImportError) as caught:
        store_from_url("mysql+mysqldb://user@127.0.0.1/db")
    message = str(caught.value)
    assert "MySQLdb" in message and 'pip install "pat-middleware[sqlalchemy]"' in message


def _hide(monkeypatch: pytest.MonkeyPatch, package: str, module: str) -> None:
    """Make ``import package`` fail as if it were not installed."""
    monkeypatch.setitem(sys.modules, package, None)
    monkeypatch.delitem(sys.modules, module, raising=False)


def test_missing_sqlalchemy_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide(monkeypatch, "sqlalchemy", "pat_middleware.stores.sqlalchemy")
    with pytest.raises(ImportError, match=r'pip install "pat-middleware\[sqlalchemy\]"'):
        store_from_url("postgresql://u@127.0.0.1/db")


# -- Redis -----------------------------------------------------------------------


def test_missing_redis_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide(monkeypatch, "redis", "pat_middleware.stores.redis")
    with pytest.raises(ImportError, match=r'pip install "pat-middleware\[redis\]"'):
        store_from_url("redis://127.0.0.1:6379/0")


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://127.0.0.1:6380/0", "unix:///tmp/redis.sock"])
def test_redis_schemes_go_to_redis_store(url: str) -> None:
    from pat_middleware.stores.redis import RedisStore

    store = store_from_url(url)  # redis-py connects lazily: no I/O here
    assert isinstance(store, RedisStore)
    store.close()


@pytest.mark.redis
def test_redis_store_from_url_works(redis_url: str, redis_prefix: str) -> None:
    store = store_from_url(redis_url, prefix=redis_prefix)
    _roundtrip(store)
    store.close()
