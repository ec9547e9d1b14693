"""DjangoStore: the store contract through Django's ORM, on SQLite and on PostgreSQL,
sync and async (``sync_to_async`` behind ``SyncOverAsync``), plus the migration."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from django.db import connections
from store_contract import StoreContract, SyncOverAsync, make_record

from pat_middleware.django.store import AsyncDjangoStore, DjangoStore
from pat_middleware.stores.base import Store
from tests.django_support import POSTGRES, postgres_or_skip

SQLITE = pytest.mark.django_db(transaction=True)


def _close_connections() -> None:
    """Drop the connections of threads that are gone (the contract's worker threads)."""
    gc.collect()


@pytest.fixture
def django_store(request: pytest.FixtureRequest) -> Iterator[DjangoStore]:
    store = DjangoStore(using=request.param)
    yield store
    _close_connections()


@SQLITE
class TestSQLiteSync(StoreContract):
    @pytest.fixture
    def store(self) -> Iterator[Store]:
        yield DjangoStore()
        _close_connections()


@SQLITE
class TestSQLiteAsync(StoreContract):
    @pytest.fixture
    def store(self) -> Iterator[Store]:
        async_store = DjangoStore().async_store
        assert isinstance(async_store, AsyncDjangoStore)
        adapter = SyncOverAsync(async_store)
        yield adapter
        adapter.close()


@POSTGRES
@postgres_or_skip
class TestPostgresSync(StoreContract):
    @pytest.fixture
    def store(self) -> Iterator[Store]:
        yield DjangoStore(using="postgres")
        _close_connections()


@POSTGRES
@postgres_or_skip
class TestPostgresAsync(StoreContract):
    @pytest.fixture
    def store(self) -> Iterator[Store]:
        adapter = SyncOverAsync(DjangoStore(using="postgres").async_store)
        yield adapter
        adapter.run(_close_in_orm_thread())
        adapter.close()


async def _close_in_orm_thread() -> None:
    from asgiref.sync import sync_to_async

    await sync_to_async(connections.close_all, thread_sensitive=True)()


@SQLITE
def test_the_migration_creates_the_table_with_its_constraint() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        tables = connection.introspection.table_names(cursor)
        constraints = connection.introspection.get_constraints(cursor, "pat_middleware_token")
    assert "pat_middleware_token" in tables
    assert constraints["pat_token_live_name"]["unique"]
    assert {"pat_token_user_id", "pat_token_family_id", "pat_token_changed_at"} <= set(constraints)


@SQLITE
def test_no_migration_is_missing() -> None:
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("makemigrations", "pat_middleware", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


@SQLITE
def test_repr_and_close() -> None:
    store = DjangoStore()
    assert repr(store) == "DjangoStore(using='default')"
    store.insert(make_record())
    store.close()  # Django owns the connections: the store still works
    assert len(store.list_user("alice")) == 1
