"""The two faces: :class:`SQLAlchemyStore` (sync) and :class:`AsyncSQLAlchemyStore`
(``store.async_store``), over the same table, statements and operations."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import MetaData
from sqlalchemy.engine import Engine, create_engine
from sqlalchemy.engine.url import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from pat_middleware.core.audit import LogEntry, LogQuery
from pat_middleware.core.models import TokenRecord
from pat_middleware.core.query import TokenQuery
from pat_middleware.stores.sqlalchemy.engines import async_available, engine_arguments, normalise_url, sync_twin
from pat_middleware.stores.sqlalchemy.errors import Errors
from pat_middleware.stores.sqlalchemy.operations import Operations
from pat_middleware.stores.sqlalchemy.runner import AsyncRunner, SyncRunner
from pat_middleware.stores.sqlalchemy.statements import Statements
from pat_middleware.stores.sqlalchemy.table import DEFAULT_TABLE, Schema, token_table

__all__ = ["AsyncSQLAlchemyStore", "SQLAlchemyStore"]


class AsyncSQLAlchemyStore:
    """The :class:`~pat_middleware.stores.base.AsyncStore` face of a :class:`SQLAlchemyStore`.

    Get it from ``store.async_store``; it shares the parent's table and statements.
    """

    def __init__(self, parent: SQLAlchemyStore, engine: AsyncEngine, owned: bool) -> None:
        self._parent = parent
        self._engine = engine
        self._owned = owned
        self._ops = parent._ops
        self._run = AsyncRunner(engine, parent._errors, parent._schema, parent._auto_create)

    def __repr__(self) -> str:
        return f"AsyncSQLAlchemyStore({self._engine.url!r}, table={self._parent.table.name!r})"

    @property
    def engine(self) -> AsyncEngine:
        """The async engine in use."""
        return self._engine

    async def create_schema(self) -> None:
        """Create the table and indexes if missing (idempotent)."""
        await self._run.ddl(self._parent._schema.create)

    async def drop_schema(self) -> None:
        """Drop the table if it exists (for tests)."""
        await self._run.ddl(self._parent._schema.drop)

    async def get(self, token_id: str) -> TokenRecord | None:
        """The record with that id, or ``None``."""
        return await self._run.read(self._ops.get, token_id)

    async def list_user(self, user_id: str) -> list[TokenRecord]:
        """All of a user's records, oldest first."""
        return await self._run.read(self._ops.list_by, "user", user_id)

    async def list_family(self, family_id: str) -> list[TokenRecord]:
        """All records of a rotation family, oldest first."""
        return await self._run.read(self._ops.list_by, "family", family_id)

    async def list_expiring(self, start: datetime, end: datetime) -> list[TokenRecord]:
        """Records with ``start < expires_at <= end`` not revoked at ``start``."""
        return await self._run.read(self._ops.list_expiring, start, end)

    async def insert(self, record: TokenRecord) -> None:
        """Add a record; ``NameTaken`` on a live-name clash, ValueError on a duplicate id."""
        await self._run.write(self._ops.insert, record)

    async def update(self, token_id: str, changes: Mapping[str, Any]) -> TokenRecord | None:
        """Apply ``changes`` to a live record; ``None`` if unknown or not live."""
        return await self._run.write(self._ops.update, token_id, changes)

    async def revoke(self, token_id: str, at: datetime) -> list[str]:
        """Revoke the record and its predecessors revocable at ``at``, in one
        transaction; the ids that changed, oldest first."""
        return await self._run.write(self._ops.revoke, token_id, at)

    async def revoke_family(self, family_id: str, at: datetime) -> list[str]:
        """Revoke the family's records revocable at ``at``; their ids, oldest first."""
        return await self._run.write(self._ops.revoke_by, "family", family_id, at)

    async def revoke_user(self, user_id: str, at: datetime) -> list[str]:
        """Revoke the user's records revocable at ``at``; their ids, oldest first."""
        return await self._run.write(self._ops.revoke_by, "user", user_id, at)

    async def rotate(self, old_id: str, new: TokenRecord, revoke_at: datetime) -> bool:
        """Revoke live ``old_id`` at ``revoke_at`` and insert ``new`` in one transaction."""
        return await self._run.write(self._ops.rotate, old_id, new, revoke_at)

    async def changes_since(self, since: datetime) -> list[tuple[str, datetime]]:
        """``(id, changed_at)`` of records whose validity changed at or after ``since``."""
        return await self._run.read(self._ops.changes_since, since)

    async def touch(self, token_id: str, at: datetime, ip: str | None, keep_ips: int) -> bool:
        """Record a use at ``at`` from ``ip``; True when ``ip`` is new to the record."""
        return await self._run.write(self._ops.touch, token_id, at, ip, keep_ips)

    async def purge(self, before: datetime) -> list[str]:
        """Delete records revoked or expired at or before ``before``; their ids."""
        return await self._run.write(self._ops.purge, before)

    async def purgeable(self, before: datetime) -> list[str]:
        """The ids :meth:`purge` would delete now; deletes nothing."""
        return await self._run.read(self._ops.purgeable, before)

    async def search(self, query: TokenQuery) -> list[TokenRecord]:
        """Every user's records answering ``query``: one indexed SELECT."""
        return await self._run.read(self._ops.search, query)

    async def append_log(self, entries: list[LogEntry]) -> None:
        """Keep log entries (an id already kept is ignored)."""
        await self._run.write(self._ops.append_log, entries)

    async def read_log(self, query: LogQuery) -> list[LogEntry]:
        """Entries answering ``query``, newest first."""
        return await self._run.read(self._ops.read_log, query)

    async def prune_log(self, before: datetime) -> int:
        """Delete entries dated before ``before`` (and notices kept until before it)."""
        return await self._run.write(self._ops.prune_log, before)

    async def claim_notice(self, token_id: str, key: str, until: datetime) -> bool:
        """True the first time ``key`` is claimed for ``token_id`` (insert-or-nothing)."""
        return await self._run.write(self._ops.claim_notice, token_id, key, until)

    async def close(self) -> None:
        """Dispose the async engine if the store created it."""
        if self._owned:
            await self._engine.dispose()
            self._owned = False


class SQLAlchemyStore:
    """A :class:`~pat_middleware.stores.base.Store` over SQLAlchemy Core; see :mod:`pat_middleware.stores.sqlalchemy`.

    ``url_or_engine`` is a database URL or the app's ``Engine``/``AsyncEngine``;
    ``async_engine`` adds the app's async engine next to a sync one.
    ``create_schema`` (default: True on SQLite, False elsewhere) creates the
    table on first use. ``engine_options`` go to ``create_engine`` for engines
    the store creates.
    """

    def __init__(
        self,
        url_or_engine: str | URL | Engine | AsyncEngine,
        *,
        table_name: str = DEFAULT_TABLE,
        schema: str | None = None,
        async_engine: AsyncEngine | None = None,
        create_schema: bool | None = None,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        options = dict(engine_options or {})
        self._engine: Engine | None = None
        self._owns_engine = False
        self._async_engine = async_engine
        self._owns_async = False
        self._derive_async = False
        self._derive_lock = threading.Lock()
        self._no_sync_reason = ""
        if isinstance(url_or_engine, Engine):
            self._engine = url_or_engine
        elif isinstance(url_or_engine, AsyncEngine):
            if async_engine is not None:
                raise TypeError("pass the AsyncEngine either positionally or as async_engine=, not both")
            self._async_engine = url_or_engine
            self._engine, self._no_sync_reason = sync_twin(url_or_engine.url, options)
            self._owns_engine = self._engine is not None
        elif isinstance(url_or_engine, str | URL):
            url = normalise_url(url_or_engine)
            if async_engine is not None:
                raise TypeError("async_engine= goes with an Engine, not a URL")
            if url.get_dialect().is_async:
                self._async_engine = create_async_engine(url, **engine_arguments(url, options))
                self._owns_async = True
                self._engine, self._no_sync_reason = sync_twin(url, options)
            else:
                self._engine = create_engine(url, **engine_arguments(url, options))
                self._derive_async = url.get_driver_name() == "psycopg"
                self._async_options = options
            self._owns_engine = self._engine is not None
        else:
            raise TypeError(f"expected a database URL, Engine or AsyncEngine, not {type(url_or_engine).__name__}")

        primary = self._engine if self._engine is not None else self._async_engine
        assert primary is not None
        dialect = primary.dialect
        self.metadata = MetaData()
        #: The tokens table this store reads and writes.
        self.table = token_table(self.metadata, table_name, schema=schema)
        statements = Statements(self.table, dialect)
        self._errors = Errors(self.table)
        self._ops = Operations(statements, self._errors)
        self._schema = Schema(self.table)
        self._auto_create = dialect.name == "sqlite" if create_schema is None else create_schema
        self._sync = (
            SyncRunner(self._engine, self._errors, self._schema, self._auto_create)
            if self._engine is not None
            else None
        )
        self._async_store: AsyncSQLAlchemyStore | None = None
        if self._async_engine is not None:
            self._async_store = AsyncSQLAlchemyStore(self, self._async_engine, owned=self._owns_async)

    def __repr__(self) -> str:
        engine = self._engine if self._engine is not None else self._async_engine
        url = engine.url if engine is not None else "?"
        return f"SQLAlchemyStore({url!r}, table={self.table.name!r})"

    @property
    def engine(self) -> Engine | None:
        """The sync engine, or None when the store only has an async one it cannot mirror."""
        return self._engine

    @property
    def async_store(self) -> AsyncSQLAlchemyStore | None:
        """The ``AsyncStore`` over the async engine, or None when there is none."""
        with self._derive_lock:
            if self._async_store is None and self._derive_async and async_available():
                assert self._engine is not None
                url = self._engine.url
                engine = create_async_engine(url, **engine_arguments(url, self._async_options))
                self._async_store = AsyncSQLAlchemyStore(self, engine, owned=True)
            self._derive_async = False
        return self._async_store

    @property
    def _runner(self) -> SyncRunner:
        if self._sync is None:
            raise RuntimeError(
                f"this SQLAlchemyStore has no sync engine ({self._no_sync_reason}); "
                "pass a sync Engine too, or use store.async_store"
            )
        return self._sync

    def create_schema(self) -> None:
        """Create the table and indexes if missing (idempotent); ``pat db init`` calls this."""
        self._runner.ddl(self._schema.create)

    def drop_schema(self) -> None:
        """Drop the table if it exists (for tests)."""
        self._runner.ddl(self._schema.drop)

    def get(self, token_id: str) -> TokenRecord | None:
        """The record with that id, or ``None``."""
        return self._runner.read(self._ops.get, token_id)

    def list_user(self, user_id: str) -> list[TokenRecord]:
        """All of a user's records, oldest first."""
        return self._runner.read(self._ops.list_by, "user", user_id)

    def list_family(self, family_id: str) -> list[TokenRecord]:
        """All records of a rotation family, oldest first."""
        return self._runner.read(self._ops.list_by, "family", family_id)

    def list_expiring(self, start: datetime, end: datetime) -> list[TokenRecord]:
        """Records with ``start < expires_at <= end`` not revoked at ``start``."""
        return self._runner.read(self._ops.list_expiring, start, end)

    def insert(self, record: TokenRecord) -> None:
        """Add a record; ``NameTaken`` on a live-name clash, ValueError on a duplicate id."""
        self._runner.write(self._ops.insert, record)

    def update(self, token_id: str, changes: Mapping[str, Any]) -> TokenRecord | None:
        """Apply ``changes`` to a live record; ``None`` if unknown or not live."""
        return self._runner.write(self._ops.update, token_id, changes)

    def revoke(self, token_id: str, at: datetime) -> list[str]:
        """Revoke the record and its predecessors revocable at ``at``, in one
        transaction; the ids that changed, oldest first."""
        return self._runner.write(self._ops.revoke, token_id, at)

    def revoke_family(self, family_id: str, at: datetime) -> list[str]:
        """Revoke the family's records revocable at ``at``; their ids, oldest first."""
        return self._runner.write(self._ops.revoke_by, "family", family_id, at)

    def revoke_user(self, user_id: str, at: datetime) -> list[str]:
        """Revoke the user's records revocable at ``at``; their ids, oldest first."""
        return self._runner.write(self._ops.revoke_by, "user", user_id, at)

    def rotate(self, old_id: str, new: TokenRecord, revoke_at: datetime) -> bool:
        """Revoke live ``old_id`` at ``revoke_at`` and insert ``new`` in one transaction."""
        return self._runner.write(self._ops.rotate, old_id, new, revoke_at)

    def changes_since(self, since: datetime) -> list[tuple[str, datetime]]:
        """``(id, changed_at)`` of records whose validity changed at or after ``since``
        (one range scan of the ``changed_at`` index)."""
        return self._runner.read(self._ops.changes_since, since)

    def touch(self, token_id: str, at: datetime, ip: str | None, keep_ips: int) -> bool:
        """Record a use at ``at`` from ``ip``; True when ``ip`` is new to the record."""
        return self._runner.write(self._ops.touch, token_id, at, ip, keep_ips)

    def purge(self, before: datetime) -> list[str]:
        """Delete records revoked or expired at or before ``before``; their ids."""
        return self._runner.write(self._ops.purge, before)

    def purgeable(self, before: datetime) -> list[str]:
        """The ids :meth:`purge` would delete now (the same ``WHERE``); deletes nothing."""
        return self._runner.read(self._ops.purgeable, before)

    def search(self, query: TokenQuery) -> list[TokenRecord]:
        """Every user's records answering ``query``: one SELECT, ordered and paged along
        the ``(created_at, id)`` or activity index."""
        return self._runner.read(self._ops.search, query)

    def append_log(self, entries: list[LogEntry]) -> None:
        """Keep log entries in one transaction (an id already kept is ignored)."""
        self._runner.write(self._ops.append_log, entries)

    def read_log(self, query: LogQuery) -> list[LogEntry]:
        """Entries answering ``query``, newest first."""
        return self._runner.read(self._ops.read_log, query)

    def prune_log(self, before: datetime) -> int:
        """Delete entries dated before ``before`` and notices kept until before it."""
        return self._runner.write(self._ops.prune_log, before)

    def claim_notice(self, token_id: str, key: str, until: datetime) -> bool:
        """True the first time ``key`` is claimed for ``token_id`` (one insert-or-nothing)."""
        return self._runner.write(self._ops.claim_notice, token_id, key, until)

    def close(self) -> None:
        """Dispose the engines the store created (never the app's own).

        An async engine the store created is best closed with
        ``await store.async_store.close()``; here its pool is only dropped.
        """
        if self._owns_engine and self._engine is not None:
            self._engine.dispose()
            self._owns_engine = False
        store = self._async_store
        if store is not None and store._owned:
            store._engine.sync_engine.dispose(close=False)
            store._owned = False
