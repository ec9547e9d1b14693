"""``SQLAlchemyStore``: token records in the app's own database (SQLAlchemy 2 Core).

PostgreSQL (psycopg 3) is the tested target; SQLite works too. No ORM model
is forced on the app: the table is plain Core.

**Migrations.** Put the table in your own Alembic history::

    # env.py, when the tokens table is the only thing you migrate
    from pat_middleware.stores.sqlalchemy import metadata
    target_metadata = metadata            # holds the default table "pat_tokens"

    # or next to your own tables, in your own MetaData
    from pat_middleware.stores.sqlalchemy import token_table
    token_table(Base.metadata)            # or token_table(my_metadata, "api_tokens")

and pass ``create_schema=False`` (the default except on SQLite). Without
migrations, ``pat db init`` (or ``store.create_schema()``) creates the table
and its indexes; both are idempotent and add to a table from release 0.1 the
feed's indexed ``changed_at`` column (Alembic users: add it in a revision).
Until then lookups work; writes and ``changes_since`` raise ``StoreUnavailable``
saying to run ``pat db init``. Each validity change sets ``changed_at`` in its
own statement from the database's clock (PostgreSQL ``now()``; SQLite ``'now'``,
to the millisecond; MySQL ``UTC_TIMESTAMP(6)``).

**Engines.** ``SQLAlchemyStore(url)`` creates and owns its engines
(``pool_pre_ping=True``, parameters hidden from error messages;
``engine_options=`` overrides); a bare ``postgresql://`` URL means psycopg 3.
Pass the app's ``Engine`` (and/or ``async_engine=``) to share its pool;
``close()`` never disposes engines the app passed in. Lookups (``get`` and
the listings) are a single SELECT run in autocommit (no BEGIN/COMMIT round
trips); writes run in one transaction each. The pre-ping costs one round
trip per pool checkout. An in-memory SQLite URL uses one shared connection,
so the store serialises its transactions.

**Async.** ``store.async_store`` implements ``AsyncStore`` when an async
engine is at hand: one passed in, one created from an async URL
(``postgresql+psycopg_async://``, ``sqlite+aiosqlite://``...), or, for a
``postgresql+psycopg://`` URL, one created with the same URL (psycopg 3
speaks both). Otherwise it is ``None`` and callers run the sync store in
threads. SQLAlchemy's asyncio layer needs ``greenlet``
(``sqlalchemy[asyncio]``); without it ``async_store`` is ``None``.
Given only an ``AsyncEngine``, the sync methods cannot borrow it (an async
driver cannot run outside the event loop), so the store opens a separate
sync engine to the same database when the driver has a sync twin (psycopg,
asyncpg -> psycopg, aiosqlite -> sqlite); otherwise the sync methods raise
``RuntimeError``.

**Atomicity.** Rotate and update are compare-and-set:
``UPDATE ... WHERE id = :id AND revoked_at IS NULL`` with a row-count check,
and rotate's UPDATE and INSERT share one transaction that is rolled back when
the UPDATE matched nothing. Under PostgreSQL's default READ COMMITTED two
workers rotating one token serialise on the row lock: exactly one wins.
(Under SERIALIZABLE the loser gets a serialisation failure, reported as
``StoreUnavailable``.) Revoke is one transaction too: a recursive SELECT
follows the token's ``rotated_from`` chain, then one UPDATE (``RETURNING``
where the dialect has it) revokes the token and its predecessors that are
still revocable, so a crash leaves all of them revoked or none.

**Live-name uniqueness** is a partial unique index on ``(user_id, name)``
``WHERE revoked_at IS NULL`` on PostgreSQL and SQLite. MySQL/MariaDB have no
partial indexes: there (and on any other dialect) the index is not created and the store checks the
name inside the writing transaction with ``SELECT ... FOR UPDATE`` instead,
which relies on InnoDB's next-key locking under REPEATABLE READ to keep two
concurrent inserts of one name apart (a deadlock there surfaces as
``StoreUnavailable``). That path is not exercised by this project's tests;
Alembic's autogenerate does not see the dialect condition, so drop the
``uq_<table>_live_name`` index from MySQL migrations by hand.

**Lost connections.** The pre-ping finds a connection that died while idle
in the pool and replaces it before use. A connection lost while in use (a
terminated backend, a restarted or failed-over server) makes SQLAlchemy
invalidate it and the rest of the pool, and the store runs the operation
once more on a fresh connection when that is known to be safe:

* reads (``get``, the listings, ``changes_since``): always; they change nothing;
* writes: when the connection was lost before the transaction's COMMIT was
  sent, since the server has then rolled the transaction back and nothing
  was written. A connection lost *during* the COMMIT leaves the outcome
  unknown (it may have committed): that raises ``StoreUnavailable`` rather
  than run the write again, because a re-run is not always the same write
  (``rotate``'s compare-and-set would find the token revoked by its own first
  run, ``insert`` would find its own id, a re-run ``revoke_user`` would not
  report the ids its first run revoked, so their cache entries would stay).
  The caller may retry: ``revoke`` is idempotent, ``update`` re-applies the
  same values. On an engine in
  ``AUTOCOMMIT`` writes are never retried.

So a terminated backend costs nothing while the server is up; the second
attempt's failure, a checkout that fails (the server is down: the pre-ping
has already tried a new connection) or a lost COMMIT raise
``StoreUnavailable`` (503 with ``Retry-After``). A server that comes back
needs no restart of the app: the next checkout connects anew.

**Errors.** Connection failures, pool timeouts and invalidated connections
(beyond the one retry above) raise ``StoreUnavailable`` (the driver's error
chained, never SQLAlchemy's, whose text carries statement parameters). A missing table raises
``StoreUnavailable`` telling you to run ``pat db init``. A live-name clash
raises ``NameTaken``; a duplicate id or a value the column rejects (too
long, NUL byte) raises ``ValueError``.

SQLite through SQLAlchemy stores naive timestamps; they are written and read
as UTC, so records always come back timezone-aware UTC. SQLite ignores
``FOR UPDATE``, so two processes touching one token at the same instant may
drop one IP from ``last_used_ips`` (revoke, rotate and update stay atomic).
The embedded :class:`~pat_middleware.stores.sqlite.SQLiteStore` is the
better SQLite choice; this path exists for apps already on SQLAlchemy.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Concatenate, Generic, Literal, NoReturn, ParamSpec, TypeVar

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    bindparam,
    delete,
    func,
    insert,
    inspect,
    literal,
    make_url,
    or_,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, CursorResult, Engine, RowMapping, create_engine
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.engine.url import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.schema import CreateColumn
from sqlalchemy.sql import ColumnElement, Executable

from ..errors import NameTaken, StoreUnavailable
from ..models import TokenRecord, utc
from ._common import check_changes, merge_ips, normalize_record
from .base import VALIDITY_FIELDS

__all__ = [
    "AsyncSQLAlchemyStore",
    "SQLAlchemyStore",
    "metadata",
    "pat_tokens",
    "token_table",
]

T = TypeVar("T")
P = ParamSpec("P")

logger = logging.getLogger("pat_middleware")

DEFAULT_TABLE = "pat_tokens"

#: Sync driver to use next to an async one on the same database.
_SYNC_TWIN = {"psycopg_async": "psycopg", "psycopg": "psycopg", "asyncpg": "psycopg", "aiosqlite": "pysqlite"}
#: ``changed_at`` (the feed's stamp) on MySQL/MariaDB: to the microsecond, like elsewhere.
_MYSQL_MICROS = mysql.DATETIME(fsp=6)
#: Dialects with partial (filtered) indexes the live-name rule can use.
_PARTIAL_INDEX_DIALECTS = ("postgresql", "sqlite")


# -- the table ------------------------------------------------------------------


def _live_name_index(table_name: str) -> str:
    return f"uq_{table_name}_live_name"


def _changed_at_index(table_name: str) -> str:
    return f"ix_{table_name}_changed_at"


def _server_now(dialect: Dialect) -> ColumnElement[Any]:
    """The database's clock as a ``changed_at`` value, to the microsecond where it can be."""
    if dialect.name == "sqlite":  # 'now' in the column's text format (SQLite keeps milliseconds)
        return func.strftime("%Y-%m-%d %H:%M:%f", "now").concat(literal("000"))
    if dialect.name in ("mysql", "mariadb"):  # UTC, like every naive value this store writes there
        return func.utc_timestamp(6)
    return func.now()


def token_table(metadata: MetaData, name: str = DEFAULT_TABLE, *, schema: str | None = None) -> Table:
    """Define the tokens table ``name`` (with its indexes) in ``metadata`` and return it."""
    table = Table(
        name,
        metadata,
        Column("id", String(12), nullable=False),
        Column("user_id", String(255), nullable=False),
        Column("name", String(255), nullable=False),
        Column("description", Text, nullable=False, default=""),
        Column("scopes", JSON, nullable=False),
        Column("hash", Text, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("expires_at", DateTime(timezone=True), nullable=True),
        Column("last_used_at", DateTime(timezone=True), nullable=True),
        Column("last_used_ips", JSON, nullable=False),
        Column("revoked_at", DateTime(timezone=True), nullable=True),
        Column("family_id", String(12), nullable=False),
        Column("rotated_from", String(12), nullable=True),
        Column("allowed_cidrs", JSON, nullable=False),
        Column("changed_at", DateTime(timezone=True).with_variant(_MYSQL_MICROS, "mysql", "mariadb")),
        PrimaryKeyConstraint("id", name=f"pk_{name}"),
        schema=schema,
    )
    c = table.c
    Index(f"ix_{name}_user_id", c.user_id)
    Index(f"ix_{name}_family_id", c.family_id)
    Index(f"ix_{name}_expires_at", c.expires_at)
    Index(_changed_at_index(name), c.changed_at)
    Index(
        _live_name_index(name),
        c.user_id,
        c.name,
        unique=True,
        postgresql_where=c.revoked_at.is_(None),
        sqlite_where=c.revoked_at.is_(None),
    ).ddl_if(dialect=_PARTIAL_INDEX_DIALECTS)  # type: ignore[arg-type]  # a tuple is documented
    return table


#: Metadata holding the default table, for Alembic's ``target_metadata``.
metadata = MetaData()
#: The default table, ``pat_tokens``, in :data:`metadata`.
pat_tokens = token_table(metadata)


# -- statements, built once ----------------------------------------------------------


class _Statements:
    """The table's select/insert/update/delete constructs (built once, bound by name)
    and the conversions between rows and :class:`TokenRecord`."""

    def __init__(self, table: Table, dialect: Dialect) -> None:
        self.table = t = table
        c = t.c
        self.naive_datetimes = dialect.name in ("mysql", "mariadb")
        self.returning = bool(dialect.update_returning and dialect.delete_returning)
        self.names_in_transaction = dialect.name not in _PARTIAL_INDEX_DIALECTS
        self.live_name_index = _live_name_index(t.name)
        self.primary_key_name = f"pk_{t.name}"

        by_id = c.id == bindparam("b_id")
        live = c.revoked_at.is_(None)
        # Ids in byte order, as the other stores sort them, whatever the database's collation.
        id_order = c.id.collate("C") if dialect.name == "postgresql" else c.id
        ordered = (c.created_at, id_order)

        def revocable(param: str) -> ColumnElement[bool]:
            return or_(c.revoked_at.is_(None), c.revoked_at > bindparam(param))

        # The record's columns only: lookups keep working on a table not yet given changed_at.
        record = select(*(col for col in t.c if col.name != "changed_at"))
        now = _server_now(dialect)
        self.get = record.where(by_id)
        self.by_user = record.where(c.user_id == bindparam("b_key")).order_by(*ordered)
        self.by_family = record.where(c.family_id == bindparam("b_key")).order_by(*ordered)
        self.changed_since = select(c.id, c.changed_at).where(c.changed_at >= bindparam("b_since"))
        self.expiring = (
            record.where(c.expires_at > bindparam("b_start"), c.expires_at <= bindparam("b_end"))
            .where(revocable("b_start"))
            .order_by(c.expires_at, id_order)
        )
        self.insert = insert(t)
        # SET comes from the execution parameters, so one construct serves every change set.
        self.update_live = update(t).where(by_id, live)
        self.update_live_stamped = self.update_live.values(changed_at=now)
        self.revoke_live = update(t).where(by_id, live).values(revoked_at=bindparam("b_at"), changed_at=now)
        self.live_name_taken = (
            select(c.id)
            .where(c.user_id == bindparam("b_user"), c.name == bindparam("b_name"), live)
            .where(c.id != bindparam("b_id"))
            .with_for_update()
        )
        self.touch_read = select(c.last_used_ips).where(by_id).with_for_update()
        self.touch_write = (
            update(t).where(by_id).values(last_used_at=bindparam("b_at"), last_used_ips=bindparam("b_ips"))
        )

        # Revoke-many and purge: one UPDATE/DELETE ... RETURNING where the dialect
        # has it, else lock the matching ids and change exactly those.
        ids = c.id.in_(bindparam("b_ids", expanding=True))
        gone = or_(c.revoked_at <= bindparam("b_before"), c.expires_at <= bindparam("b_before"))
        # A record and its predecessors (see stores.base) take two statements: its
        # rotated_from chain (a recursive SELECT; UNION stops at a cycle), then its
        # family's records on that chain or created before it (key "lineage"), so no
        # dialect has to accept a subquery on the very table it updates.
        head = select(c.id, c.rotated_from, c.family_id, c.created_at).where(by_id).cte("chain", recursive=True)
        x = t.alias("x")
        chain = head.union(
            select(x.c.id, x.c.rotated_from, x.c.family_id, x.c.created_at).where(x.c.id == head.c.rotated_from)
        )
        self.chain = select(chain.c.id, chain.c.family_id, chain.c.created_at)
        matching: dict[str, tuple[ColumnElement[bool], ...]] = {
            "user": (c.user_id == bindparam("b_key"),),
            "family": (c.family_id == bindparam("b_key"),),
            "lineage": (c.family_id == bindparam("b_key"), or_(c.created_at < bindparam("b_created"), ids)),
        }
        revoke = update(t).values(revoked_at=bindparam("b_at"), changed_at=now)
        returned = (c.id, c.created_at) if self.returning else ()  # no RETURNING where there is none
        self.revoke_by: dict[str, Executable] = {
            k: revoke.where(*where, revocable("b_at")).returning(*returned) for k, where in matching.items()
        }
        self.revocable_by = {
            k: select(c.id, c.created_at).where(*where, revocable("b_at")).with_for_update()
            for k, where in matching.items()
        }
        self.revoke_ids = revoke.where(ids, revocable("b_at"))
        self.purge: Executable = delete(t).where(gone).returning(*returned)
        self.purgeable = select(c.id, c.created_at).where(gone).with_for_update()
        self.delete_ids = delete(t).where(ids)

    # -- conversions --

    def dt(self, value: datetime | None) -> datetime | None:
        """A datetime ready to bind: UTC, naive where the column keeps no zone."""
        if value is None:
            return None
        value = utc(value)
        return value.replace(tzinfo=None) if self.naive_datetimes else value

    def row(self, record: TokenRecord) -> dict[str, Any]:
        """Insert parameters for ``record``."""
        r = normalize_record(record)
        return {
            "id": r.id,
            "user_id": r.user_id,
            "name": r.name,
            "description": r.description,
            "scopes": list(r.scopes),
            "hash": r.hash,
            "created_at": self.dt(r.created_at),
            "expires_at": self.dt(r.expires_at),
            "last_used_at": self.dt(r.last_used_at),
            "last_used_ips": list(r.last_used_ips),
            "revoked_at": self.dt(r.revoked_at),
            "family_id": r.family_id,
            "rotated_from": r.rotated_from,
            "allowed_cidrs": list(r.allowed_cidrs),
        }

    def changes(self, clean: Mapping[str, Any]) -> dict[str, Any]:
        """SET parameters for checked ``changes`` (see ``check_changes``)."""
        return {
            key: list(value) if isinstance(value, tuple) else self.dt(value) if key == "expires_at" else value
            for key, value in clean.items()
        }

    @staticmethod
    def record(row: RowMapping) -> TokenRecord:
        """The :class:`TokenRecord` of a table row (timestamps made aware UTC)."""

        def when(value: datetime | None) -> datetime | None:
            return None if value is None else utc(value)

        return TokenRecord(
            id=row["id"],
            user_id=row["user_id"],
            name=row["name"],
            hash=row["hash"],
            scopes=tuple(row["scopes"] or ()),
            description=row["description"] or "",
            created_at=utc(row["created_at"]),
            expires_at=when(row["expires_at"]),
            last_used_at=when(row["last_used_at"]),
            last_used_ips=tuple(row["last_used_ips"] or ()),
            revoked_at=when(row["revoked_at"]),
            family_id=row["family_id"],
            rotated_from=row["rotated_from"],
            allowed_cidrs=tuple(row["allowed_cidrs"] or ()),
        )


# -- operations: the store's SQL, written once over a sync Connection -----------------------


_Key = Literal["user", "family", "lineage"]


def _ids_in_order(rows: Iterable[RowMapping]) -> list[str]:
    return [r["id"] for r in sorted(rows, key=lambda r: (utc(r["created_at"]), r["id"]))]


class _Operations:
    """The store's operations, each a plain function of a sync ``Connection``.

    A runner calls one inside the transaction it opened (a read: on a
    connection in autocommit) and commits when it returns; the async store
    runs the very same method through ``AsyncConnection.run_sync``. So each
    SQL operation has one implementation, for both faces and every dialect.
    """

    def __init__(self, statements: _Statements, errors: _Errors) -> None:
        self.s = statements
        self.errors = errors

    def get(self, conn: Connection, token_id: str) -> TokenRecord | None:
        row = conn.execute(self.s.get, {"b_id": token_id}).mappings().first()
        return None if row is None else self.s.record(row)

    def list_by(self, conn: Connection, key: Literal["user", "family"], value: str) -> list[TokenRecord]:
        statement = self.s.by_user if key == "user" else self.s.by_family
        return [self.s.record(r) for r in conn.execute(statement, {"b_key": value}).mappings()]

    def list_expiring(self, conn: Connection, start: datetime, end: datetime) -> list[TokenRecord]:
        rows = conn.execute(self.s.expiring, {"b_start": self.s.dt(start), "b_end": self.s.dt(end)}).mappings()
        return [self.s.record(r) for r in rows]

    def _write(
        self, conn: Connection, statement: Executable, params: Mapping[str, Any], name: str | None, token_id: str
    ) -> CursorResult[Any]:
        """Run a statement that may break the live-name rule or the primary key:
        its IntegrityError becomes ``NameTaken(name)`` or a ValueError naming ``token_id``."""
        try:
            return conn.execute(statement, params)
        except sa_exc.IntegrityError as error:
            raise self.errors.integrity(error, name, token_id) from _cause(error)

    def _check_name(self, conn: Connection, user_id: str, name: str, token_id: str) -> None:
        """Where no partial index exists, look for a live namesake under a row lock."""
        if self.s.names_in_transaction:
            params = {"b_user": user_id, "b_name": name, "b_id": token_id}
            if conn.execute(self.s.live_name_taken, params).first() is not None:
                raise NameTaken(name)

    def insert(self, conn: Connection, record: TokenRecord) -> None:
        self._check_name(conn, record.user_id, record.name, record.id)
        self._write(conn, self.s.insert, self.s.row(record), record.name, record.id)

    def update(self, conn: Connection, token_id: str, changes: Mapping[str, Any]) -> TokenRecord | None:
        clean = check_changes(changes)
        if clean:
            if "name" in clean and self.s.names_in_transaction:
                current = conn.execute(self.s.get, {"b_id": token_id}).mappings().first()
                if current is not None:
                    self._check_name(conn, current["user_id"], clean["name"], token_id)
            params = {**self.s.changes(clean), "b_id": token_id}
            statement = self.s.update_live if VALIDITY_FIELDS.isdisjoint(clean) else self.s.update_live_stamped
            if self._write(conn, statement, params, clean.get("name"), token_id).rowcount != 1:
                return None
        record = self.get(conn, token_id)
        return record if record is not None and record.revoked_at is None else None

    def revoke(self, conn: Connection, token_id: str, at: datetime) -> list[str]:
        chain = list(conn.execute(self.s.chain, {"b_id": token_id}).mappings())
        me = next((r for r in chain if r["id"] == token_id), None)
        if me is None:
            return []
        extra = {"b_created": self.s.dt(me["created_at"]), "b_ids": [r["id"] for r in chain]}
        return self._revoke(conn, "lineage", me["family_id"], at, extra)

    def revoke_by(self, conn: Connection, key: Literal["user", "family"], value: str, at: datetime) -> list[str]:
        return self._revoke(conn, key, value, at, {})

    def _revoke(self, conn: Connection, key: _Key, value: str, at: datetime, extra: Mapping[str, Any]) -> list[str]:
        params = {"b_key": value, "b_at": self.s.dt(at), **extra}
        if self.s.returning:
            return _ids_in_order(conn.execute(self.s.revoke_by[key], params).mappings())
        ids = _ids_in_order(conn.execute(self.s.revocable_by[key], params).mappings())
        if ids:
            conn.execute(self.s.revoke_ids, {"b_ids": ids, "b_at": params["b_at"]})
        return ids

    def rotate(self, conn: Connection, old_id: str, new: TokenRecord, revoke_at: datetime) -> bool:
        if conn.execute(self.s.revoke_live, {"b_id": old_id, "b_at": self.s.dt(revoke_at)}).rowcount != 1:
            conn.rollback()  # nothing to keep: end the transaction without a COMMIT
            return False
        self.insert(conn, new)
        return True

    def changes_since(self, conn: Connection, since: datetime) -> list[tuple[str, datetime]]:
        rows = conn.execute(self.s.changed_since, {"b_since": self.s.dt(since)}).mappings()
        return [(r["id"], utc(r["changed_at"])) for r in rows]

    def touch(self, conn: Connection, token_id: str, at: datetime, ip: str | None, keep_ips: int) -> None:
        row = conn.execute(self.s.touch_read, {"b_id": token_id}).mappings().first()
        if row is not None:
            ips = list(merge_ips(tuple(row["last_used_ips"] or ()), ip, keep_ips))
            conn.execute(self.s.touch_write, {"b_id": token_id, "b_at": self.s.dt(at), "b_ips": ips})

    def purge(self, conn: Connection, before: datetime) -> list[str]:
        params = {"b_before": self.s.dt(before)}
        if self.s.returning:
            return _ids_in_order(conn.execute(self.s.purge, params).mappings())
        ids = _ids_in_order(conn.execute(self.s.purgeable, params).mappings())
        if ids:
            conn.execute(self.s.delete_ids, {"b_ids": ids})
        return ids


# -- error mapping and the runners ------------------------------------------------------------


def _missing_table(error: BaseException, table_name: str) -> bool:
    orig = getattr(error, "orig", None)
    if "42P01" in (getattr(orig, "sqlstate", None), getattr(orig, "pgcode", None)):
        return True
    text = str(orig).lower()
    return table_name.lower() in text and any(
        marker in text for marker in ("no such table", "doesn't exist", "does not exist")
    )


def _missing_changed_at(error: BaseException) -> bool:
    """True when the table predates the ``changed_at`` column (release 0.1)."""
    orig = getattr(error, "orig", None)
    text = str(orig).lower()
    if "changed_at" not in text:
        return False
    return "42703" in (getattr(orig, "sqlstate", None), getattr(orig, "pgcode", None)) or any(
        marker in text for marker in ("no such column", "has no column", "unknown column", "does not exist")
    )


class _Errors:
    """Turns driver and pool errors into this library's errors, without parameters."""

    def __init__(self, statements: _Statements) -> None:
        self.s = statements

    @staticmethod
    def unreachable(error: BaseException) -> bool:
        """True for connection failures, pool timeouts and invalidated connections."""
        if isinstance(error, OSError):
            return True
        if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
            return True
        return isinstance(
            error,
            sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError | sa_exc.DisconnectionError,
        )

    def translate(self, error: BaseException) -> Exception | None:
        """The error to raise instead of ``error``, or None to let it through."""
        table = self.s.table.name
        if _missing_changed_at(error):
            return StoreUnavailable(
                f"the token table {table!r} lacks the changed_at column (release 0.1): run "
                "`pat db init` (store.create_schema()) or add it to your migrations"
            )
        if _missing_table(error, table):
            return StoreUnavailable(
                f"the token table {table!r} does not exist: run `pat db init` "
                "(store.create_schema()) or add it to your migrations"
            )
        if isinstance(error, sa_exc.IntegrityError):
            return self.integrity(error, None, None)
        if isinstance(error, sa_exc.DataError):  # too long, NUL byte...: the driver's text may quote it
            return ValueError("the database rejected a value of the token record (DataError)")
        if self.unreachable(error):
            return StoreUnavailable(f"the token database is unavailable ({type(error).__name__})")
        return None

    def integrity(self, error: sa_exc.IntegrityError, name: str | None, token_id: str | None) -> Exception:
        """The error for a constraint violation by the write of token ``token_id`` named ``name``."""
        text = str(error.orig)
        table = self.s.table.name
        if self.s.live_name_index in text or (f"{table}.user_id" in text and f"{table}.name" in text):
            return NameTaken(name or "")
        if self.s.primary_key_name in text or f"{table}.id" in text or "'PRIMARY'" in text:
            return ValueError(f"a token with id {token_id!r} already exists")
        return ValueError("the database rejected the token record (integrity constraint)")

    def reraise(self, error: BaseException) -> NoReturn:
        """Raise the library's error for ``error`` (chained to the driver's), or ``error`` itself."""
        mapped = self.translate(error)
        if mapped is None:
            raise error
        raise mapped from _cause(error)


def _cause(error: BaseException) -> BaseException:
    """The driver's own error when there is one: SQLAlchemy's text would carry parameters."""
    orig = getattr(error, "orig", None)
    return orig if isinstance(orig, BaseException) else error


class _Schema:
    """Create/drop the table with its indexes; idempotent (a lost creation race is retried).

    ``create`` also brings a table from release 0.1 up to date: ``ALTER TABLE
    ... ADD COLUMN changed_at`` and its index, when the column is missing.
    """

    def __init__(self, table: Table) -> None:
        self.table = table

    def create(self, conn: Connection) -> None:
        table = self.table
        table.create(conn, checkfirst=True)
        present = {col["name"] for col in inspect(conn).get_columns(table.name, schema=table.schema)}
        if "changed_at" not in present:
            column = CreateColumn(table.c.changed_at).compile(dialect=conn.dialect)
            name = conn.dialect.identifier_preparer.format_table(table)
            conn.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN {column}")
        index = next(i for i in table.indexes if i.name == _changed_at_index(table.name))
        index.create(conn, checkfirst=True)

    def drop(self, conn: Connection) -> None:
        self.table.drop(conn, checkfirst=True)


_E = TypeVar("_E", Engine, AsyncEngine)


def _autocommit(engine: _E) -> _E:
    """``engine`` (same pool) running without BEGIN/COMMIT: a lone SELECT needs no
    transaction, and skipping it saves two round trips per lookup."""
    try:
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    except sa_exc.ArgumentError:  # a dialect without autocommit
        return engine


@dataclass(slots=True)
class _Attempt:
    """How far one run of an operation got, for :meth:`_Runner.retry`."""

    read: bool
    #: A connection was checked out (failures before that are the pool's).
    connected: bool = False
    #: The operation returned: what fails now is the COMMIT, whose outcome is unknown.
    committing: bool = False


class _Runner(Generic[_E]):
    """What both runners share: the engines, the error mapping and the retry rule.
    ``ready`` turns true once the schema is ensured.

    A connection the database dropped (a terminated backend, a restarted or
    failed-over server: SQLAlchemy invalidates the connection and, with it, the
    rest of the pool) is retried once on a fresh connection when that is known
    to be safe: a read (one SELECT, in autocommit), or a transaction that lost
    its connection before its COMMIT was sent, which the server has therefore
    rolled back. A connection lost *during* the COMMIT leaves the outcome
    unknown: that raises ``StoreUnavailable``, as does any failure of the
    second attempt or of the checkout itself (the pool's pre-ping has already
    tried a new connection there).
    """

    def __init__(self, engine: _E, errors: _Errors, schema: _Schema, auto_create: bool) -> None:
        self.engine: _E = engine
        self.reader: _E = _autocommit(engine)
        self.errors = errors
        self.schema = schema
        self.ready = not auto_create
        #: One connection shared by every caller (in-memory SQLite): transactions must not interleave.
        self.shared_connection = isinstance(engine.pool, StaticPool)
        #: Writes are retried only where they run in a transaction (not on an AUTOCOMMIT engine,
        #: set by execution options or by ``create_engine(isolation_level=)``).
        levels = (
            engine.get_execution_options().get("isolation_level"),
            getattr(engine.dialect, "_on_connect_isolation_level", None),
        )
        self.transactional = "AUTOCOMMIT" not in levels

    def attempts(self, read: bool) -> int:
        """How many attempts an operation gets: two where a lost connection can be
        retried safely, else one."""
        return 2 if read or self.transactional else 1

    def retry(self, error: BaseException, attempt: _Attempt, last: bool) -> None:
        """Return to run the operation once more after ``error``; else raise the library's error."""
        lost = isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated
        if last or not (lost and attempt.connected and (attempt.read or not attempt.committing)):
            self.errors.reraise(error)
        logger.info("token store: a database connection was lost; retrying on a fresh one")

    def ddl_failed(self, error: BaseException, retry: bool) -> bool:
        """True to try a DDL action once more (a lost race with another creator), else raise."""
        if retry and not self.errors.unreachable(error):
            return True
        self.errors.reraise(error)


class _SyncRunner(_Runner[Engine]):
    def __init__(self, engine: Engine, errors: _Errors, schema: _Schema, auto_create: bool) -> None:
        super().__init__(engine, errors, schema, auto_create)
        self.lock: AbstractContextManager[Any] = threading.Lock() if self.shared_connection else nullcontext()

    def read(self, op: Callable[Concatenate[Connection, P], T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``op(conn, *args, **kwargs)`` on a connection in autocommit (one SELECT)."""
        return self._run(lambda conn: op(conn, *args, **kwargs), read=True)

    def write(self, op: Callable[Concatenate[Connection, P], T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``op(conn, *args, **kwargs)`` in one transaction, committed when it returns."""
        return self._run(lambda conn: op(conn, *args, **kwargs), read=False)

    def _run(self, op: Callable[[Connection], T], read: bool) -> T:
        if not self.ready:
            self.ddl(self.schema.create)
            self.ready = True
        attempts = self.attempts(read)
        for n in range(1, attempts + 1):
            attempt = _Attempt(read)
            try:
                with self.lock, self.reader.connect() if read else self.engine.begin() as conn:
                    attempt.connected = True
                    result = op(conn)
                    attempt.committing = True
                return result
            except (sa_exc.SQLAlchemyError, OSError) as error:
                self.retry(error, attempt, last=n == attempts)
        raise AssertionError("the last attempt returns or raises")

    def ddl(self, action: Callable[[Connection], None], retry: bool = True) -> None:
        try:
            with self.lock, self.engine.begin() as conn:
                action(conn)
        except (sa_exc.SQLAlchemyError, OSError) as error:
            if self.ddl_failed(error, retry):
                self.ddl(action, retry=False)


class _AsyncRunner(_Runner[AsyncEngine]):
    """Runs the same sync operations, through ``AsyncConnection.run_sync``."""

    def __init__(self, engine: AsyncEngine, errors: _Errors, schema: _Schema, auto_create: bool) -> None:
        super().__init__(engine, errors, schema, auto_create)
        # (an asyncio.Lock binds to the first loop that waits on it: one loop per in-memory store)
        self.lock: AbstractAsyncContextManager[Any] = asyncio.Lock() if self.shared_connection else nullcontext()

    async def read(self, op: Callable[Concatenate[Connection, P], T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``op(conn, *args, **kwargs)`` on a connection in autocommit (one SELECT)."""
        return await self._run(lambda conn: op(conn, *args, **kwargs), read=True)

    async def write(self, op: Callable[Concatenate[Connection, P], T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``op(conn, *args, **kwargs)`` in one transaction, committed when it returns."""
        return await self._run(lambda conn: op(conn, *args, **kwargs), read=False)

    async def _run(self, op: Callable[[Connection], T], read: bool) -> T:
        if not self.ready:
            await self.ddl(self.schema.create)
            self.ready = True
        attempts = self.attempts(read)
        for n in range(1, attempts + 1):
            attempt = _Attempt(read)
            try:
                async with self.lock, self.reader.connect() if read else self.engine.begin() as conn:
                    attempt.connected = True
                    result = await conn.run_sync(op)
                    attempt.committing = True
                return result
            except (sa_exc.SQLAlchemyError, OSError) as error:
                self.retry(error, attempt, last=n == attempts)
        raise AssertionError("the last attempt returns or raises")

    async def ddl(self, action: Callable[[Connection], None], retry: bool = True) -> None:
        try:
            conn: AsyncConnection
            async with self.lock, self.engine.begin() as conn:
                await conn.run_sync(action)
        except (sa_exc.SQLAlchemyError, OSError) as error:
            if self.ddl_failed(error, retry):
                await self.ddl(action, retry=False)


# -- engines --------------------------------------------------------------------------------


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


def _normalise_url(url: str | URL) -> URL:
    """A bare ``postgresql://`` (or ``postgres://``) URL means psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _is_memory_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def _engine_options(url: URL, options: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {"pool_pre_ping": True, "hide_parameters": True}
    if _is_memory_sqlite(url):  # one shared in-memory database for every thread
        merged.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    merged.update(options)
    return merged


def _sync_twin(url: URL, options: Mapping[str, Any]) -> tuple[Engine | None, str]:
    """A sync engine on the database of the async ``url``, or None and why not."""
    driver = url.get_driver_name()
    twin = _SYNC_TWIN.get(driver)
    if twin is None or _is_memory_sqlite(url):
        return None, f"no sync driver is known for {url.drivername!r}"
    sync_url = url.set(drivername=f"{url.get_backend_name()}+{twin}")
    try:
        return create_engine(sync_url, **_engine_options(sync_url, options)), ""
    except ImportError as error:
        return None, f"the sync driver for {sync_url.drivername!r} is not installed ({error})"


def _async_available() -> bool:
    return importlib.util.find_spec("greenlet") is not None


# -- the stores -------------------------------------------------------------------------------


class AsyncSQLAlchemyStore:
    """The :class:`~pat_middleware.stores.base.AsyncStore` face of a :class:`SQLAlchemyStore`.

    Get it from ``store.async_store``; it shares the parent's table and statements.
    """

    def __init__(self, parent: SQLAlchemyStore, engine: AsyncEngine, owned: bool) -> None:
        self._parent = parent
        self._engine = engine
        self._owned = owned
        self._ops = parent._ops
        self._run = _AsyncRunner(engine, parent._errors, parent._schema, parent._auto_create)

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

    async def touch(self, token_id: str, at: datetime, ip: str | None, keep_ips: int) -> None:
        """Record a use at ``at`` from ``ip``."""
        await self._run.write(self._ops.touch, token_id, at, ip, keep_ips)

    async def purge(self, before: datetime) -> list[str]:
        """Delete records revoked or expired at or before ``before``; their ids."""
        return await self._run.write(self._ops.purge, before)

    async def close(self) -> None:
        """Dispose the async engine if the store created it."""
        if self._owned:
            await self._engine.dispose()
            self._owned = False


class SQLAlchemyStore:
    """A :class:`~pat_middleware.stores.base.Store` over SQLAlchemy Core; see the module doc.

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
            self._engine, self._no_sync_reason = _sync_twin(url_or_engine.url, options)
            self._owns_engine = self._engine is not None
        elif isinstance(url_or_engine, str | URL):
            url = _normalise_url(url_or_engine)
            if async_engine is not None:
                raise TypeError("async_engine= goes with an Engine, not a URL")
            if url.get_dialect().is_async:
                self._async_engine = create_async_engine(url, **_engine_options(url, options))
                self._owns_async = True
                self._engine, self._no_sync_reason = _sync_twin(url, options)
            else:
                self._engine = create_engine(url, **_engine_options(url, options))
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
        statements = _Statements(self.table, dialect)
        self._errors = _Errors(statements)
        self._ops = _Operations(statements, self._errors)
        self._schema = _Schema(self.table)
        self._auto_create = dialect.name == "sqlite" if create_schema is None else create_schema
        self._sync = (
            _SyncRunner(self._engine, self._errors, self._schema, self._auto_create)
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
            if self._async_store is None and self._derive_async and _async_available():
                assert self._engine is not None
                url = self._engine.url
                engine = create_async_engine(url, **_engine_options(url, self._async_options))
                self._async_store = AsyncSQLAlchemyStore(self, engine, owned=True)
            self._derive_async = False
        return self._async_store

    @property
    def _runner(self) -> _SyncRunner:
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

    def touch(self, token_id: str, at: datetime, ip: str | None, keep_ips: int) -> None:
        """Record a use at ``at`` from ``ip``."""
        self._runner.write(self._ops.touch, token_id, at, ip, keep_ips)

    def purge(self, before: datetime) -> list[str]:
        """Delete records revoked or expired at or before ``before``; their ids."""
        return self._runner.write(self._ops.purge, before)

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
