"""``SQLiteStore``: the embedded default store, stdlib :mod:`sqlite3` in WAL mode.

Layout of the table (name configurable): one row per token, ``WITHOUT ROWID``
so a lookup by id is a single B-tree search. Timestamps are INTEGER
microseconds since the Unix epoch (UTC): exact round trips and correct
ordering in SQL. ``scopes``, ``last_used_ips`` and ``allowed_cidrs`` are JSON
arrays; ``resources`` a JSON array or NULL (every resource). A partial unique
index on ``(user_id, name) WHERE revoked_at IS NULL``
enforces live-name uniqueness atomically, across threads and processes.

``changed_at`` (indexed) is the revocation feed's stamp: every write that
changes a token's validity sets it, in the same statement, to the writing
host's clock read once the write lock is held (so on one host stamps follow
commit order). A table from release 0.1 gets the column and its index when a
store first opens it, and an older table its ``resources`` column.

Administration (release 0.2): ``search`` is one SELECT along the
``(created_at, id)`` or ``(COALESCE(last_used_at, created_at), id)`` index
(``<table>_created``, ``<table>_activity``); ``name_contains`` folds ASCII
case only (SQLite's ``lower()``). The security log is ``<table>_log``
(indexed by user, token and date) and sent notices ``<table>_notices``. Opening
a store creates whichever of these an older database lacks.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from pat_middleware.core.audit import LogEntry, LogQuery
from pat_middleware.core.models import TokenRecord
from pat_middleware.core.query import TokenQuery
from pat_middleware.errors import NameTaken
from pat_middleware.stores._common import check_changes, merge_ips, normalize_record
from pat_middleware.stores._sql_query import ACTIVITY, SQLITE, log_sql, search_sql
from pat_middleware.stores._sqlite_codec import (
    COLUMNS,
    LOG_COLUMNS,
    encode,
    from_micros,
    json_text,
    json_tuple,
    log_entry,
    log_row,
    micros,
    token_record,
    token_row,
)
from pat_middleware.stores._sqlite_pool import Lease, Pool
from pat_middleware.stores.base import VALIDITY_FIELDS

__all__ = ["SQLiteStore"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_REVOCABLE = "(revoked_at IS NULL OR revoked_at > ?)"
_PURGEABLE = "(revoked_at <= ? OR expires_at <= ?)"


def _now_micros() -> int:
    """This host's clock, as stored (the feed's stamp: SQLite has no server clock)."""
    return time.time_ns() // 1000


def _schema(t: str) -> str:
    return f"""
        CREATE TABLE IF NOT EXISTS {t} (
            id TEXT PRIMARY KEY NOT NULL,
            user_id TEXT NOT NULL,
            name TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            scopes TEXT NOT NULL DEFAULT '[]',
            hash TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            expires_at INTEGER,
            last_used_at INTEGER,
            last_used_ips TEXT NOT NULL DEFAULT '[]',
            revoked_at INTEGER,
            family_id TEXT NOT NULL,
            rotated_from TEXT,
            allowed_cidrs TEXT NOT NULL DEFAULT '[]',
            changed_at INTEGER,
            resources TEXT
        ) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS {t}_user ON {t} (user_id, created_at);
        CREATE UNIQUE INDEX IF NOT EXISTS {t}_live_name ON {t} (user_id, name)
            WHERE revoked_at IS NULL;
        CREATE INDEX IF NOT EXISTS {t}_family ON {t} (family_id, created_at);
        CREATE INDEX IF NOT EXISTS {t}_expires ON {t} (expires_at);
        CREATE INDEX IF NOT EXISTS {t}_created ON {t} (created_at, id);
        CREATE INDEX IF NOT EXISTS {t}_activity ON {t} ({ACTIVITY}, id);
        CREATE TABLE IF NOT EXISTS {t}_log (
            id TEXT PRIMARY KEY NOT NULL,
            at INTEGER NOT NULL,
            kind TEXT NOT NULL,
            token_id TEXT,
            user_id TEXT,
            actor TEXT,
            client_ip TEXT,
            reason TEXT,
            details TEXT NOT NULL DEFAULT '{{}}'
        ) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS {t}_log_user ON {t}_log (user_id, id);
        CREATE INDEX IF NOT EXISTS {t}_log_token ON {t}_log (token_id, id);
        CREATE INDEX IF NOT EXISTS {t}_log_at ON {t}_log (at);
        CREATE TABLE IF NOT EXISTS {t}_notices (
            token_id TEXT NOT NULL,
            key TEXT NOT NULL,
            until INTEGER NOT NULL,
            PRIMARY KEY (token_id, key)
        ) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS {t}_notices_until ON {t}_notices (until);
    """


def _setup(t: str) -> Callable[[sqlite3.Connection], None]:
    """Create the table and indexes if missing, and bring an older table up to date
    (its ``changed_at`` and ``resources`` columns), in one ``BEGIN IMMEDIATE`` transaction."""
    schema = _schema(t)

    def setup(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in filter(str.strip, schema.split(";")):
                conn.execute(statement)
            present = {row[1] for row in conn.execute(f"PRAGMA table_info({t})")}
            if "changed_at" not in present:
                conn.execute(f"ALTER TABLE {t} ADD COLUMN changed_at INTEGER")
            if "resources" not in present:
                conn.execute(f"ALTER TABLE {t} ADD COLUMN resources TEXT")
            conn.execute(f"CREATE INDEX IF NOT EXISTS {t}_changed ON {t} (changed_at)")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    return setup


class _Statements:
    """Every SQL text, built once per table so sqlite3's statement cache reuses them."""

    def __init__(self, t: str) -> None:
        self.get = f"SELECT {COLUMNS} FROM {t} WHERE id = ?"
        self.get_live = f"SELECT {COLUMNS} FROM {t} WHERE id = ? AND revoked_at IS NULL"
        self.list_user = f"SELECT {COLUMNS} FROM {t} WHERE user_id = ? ORDER BY created_at, id"
        self.list_family = f"SELECT {COLUMNS} FROM {t} WHERE family_id = ? ORDER BY created_at, id"
        self.list_expiring = (
            f"SELECT {COLUMNS} FROM {t} WHERE expires_at > ? AND expires_at <= ?"
            f" AND {_REVOCABLE} ORDER BY expires_at, id"
        )
        self.insert = f"INSERT INTO {t} ({COLUMNS}) VALUES ({', '.join('?' * 15)})"
        self.revoke_live = f"UPDATE {t} SET revoked_at = ?, changed_at = ? WHERE id = ? AND revoked_at IS NULL"
        self.get_ips = f"SELECT last_used_ips FROM {t} WHERE id = ?"
        self.touch = f"UPDATE {t} SET last_used_at = ?, last_used_ips = ? WHERE id = ?"
        self.purge_ids = f"SELECT id FROM {t} WHERE {_PURGEABLE} ORDER BY created_at, id"
        self.purge = f"DELETE FROM {t} WHERE {_PURGEABLE}"
        self.lineage_of = f"SELECT family_id, created_at FROM {t} WHERE id = ?"
        # The record and its predecessors (see stores.base): its family's records on
        # its rotated_from chain (UNION stops at a cycle) or created before it.
        chain = (
            f"WITH RECURSIVE chain(id, prev) AS (SELECT id, rotated_from FROM {t} WHERE id = ?"
            f" UNION SELECT x.id, x.rotated_from FROM {t} AS x JOIN chain ON x.id = chain.prev)"
            " SELECT id FROM chain"
        )
        lineage = f"family_id = ? AND (created_at < ? OR id IN ({chain})) AND {_REVOCABLE}"
        self.lineage_ids = f"SELECT id FROM {t} WHERE {lineage} ORDER BY created_at, id"
        self.revoke_lineage = f"UPDATE {t} SET revoked_at = ?, changed_at = ? WHERE {lineage}"
        self.changes = f"SELECT id, changed_at FROM {t} WHERE changed_at >= ?"
        self.search = f"SELECT {COLUMNS} FROM {t} WHERE {{where}} ORDER BY {{order}} LIMIT :limit"
        self.read_log = f"SELECT {LOG_COLUMNS} FROM {t}_log WHERE {{where}} ORDER BY {{order}} LIMIT :limit"
        self.append_log = f"INSERT INTO {t}_log ({LOG_COLUMNS}) VALUES ({', '.join('?' * 9)}) ON CONFLICT DO NOTHING"
        self.prune_log = f"DELETE FROM {t}_log WHERE at < ?"
        self.prune_notices = f"DELETE FROM {t}_notices WHERE until < ?"
        self.claim = f"INSERT INTO {t}_notices (token_id, key, until) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
        self.setup = _setup(t)
        self._table = t

    def revocable_ids(self, column: str) -> str:
        """Ids matching ``column = ?`` that are revocable at ``?``."""
        return f"SELECT id FROM {self._table} WHERE {column} = ? AND {_REVOCABLE} ORDER BY created_at, id"

    def revoke(self, column: str) -> str:
        """Revoke rows matching ``column = ?`` that are revocable at ``?``."""
        return f"UPDATE {self._table} SET revoked_at = ?, changed_at = ? WHERE {column} = ? AND {_REVOCABLE}"

    def update(self, fields: Iterable[str], stamp: bool) -> str:
        """Update ``fields`` (already checked against UPDATABLE_FIELDS) of a live row,
        and ``changed_at`` when ``stamp``."""
        assignments = ", ".join([*(f"{f} = ?" for f in fields), *(["changed_at = ?"] if stamp else [])])
        return f"UPDATE {self._table} SET {assignments} WHERE id = ? AND revoked_at IS NULL"


@contextmanager
def _constraints(token_id: str, name: str) -> Iterator[None]:
    """Map constraint violations to ``NameTaken`` / ValueError."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        if exc.sqlite_errorname == "SQLITE_CONSTRAINT_PRIMARYKEY":
            raise ValueError(f"a token with id {token_id!r} already exists") from exc
        if exc.sqlite_errorname == "SQLITE_CONSTRAINT_UNIQUE":
            raise NameTaken(name) from exc
        raise


class SQLiteStore:
    """A :class:`~pat_middleware.stores.base.Store` in one SQLite file (WAL mode).

    Threads: connections come from a small pool, one caller at a time
    (``check_same_thread=False`` only so a connection can move between
    threads, never to share it). Readers run in parallel under WAL, and the
    pool survives thread-per-request servers without reopening a connection
    per request. Processes: each compare-and-set runs in ``BEGIN IMMEDIATE``,
    so writers from any process are serialised by SQLite's file lock; a busy
    database is waited on for ``timeout`` seconds, then ``StoreUnavailable``.
    ``":memory:"`` uses one shared connection behind a lock. The schema is
    created (idempotently) on first use.
    """

    def __init__(self, path: str | os.PathLike[str], *, table: str = "pat_tokens", timeout: float = 5.0) -> None:
        if not _IDENTIFIER.fullmatch(table):
            raise ValueError(f"table must be a plain SQL identifier, got {table!r}")
        self.path = os.fspath(path)
        self.table = table
        self._sql = _Statements(table)
        self._pool = Pool(self.path, timeout, self._sql.setup)

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r}, table={self.table!r})"

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back if the block raises."""
        with Lease(self._pool) as conn:
            conn.execute("BEGIN IMMEDIATE")
            yield conn  # on error, the pool rolls back before reuse
            if conn.in_transaction:
                conn.execute("COMMIT")

    def _query(self, sql: str, params: tuple[Any, ...] | dict[str, Any]) -> list[TokenRecord]:
        with Lease(self._pool) as conn:
            return [token_record(row) for row in conn.execute(sql, params)]

    def _revoke_where(self, column: str, value: str, at: datetime) -> list[str]:
        stamp = micros(at)
        with self._transaction() as conn:
            ids = [row[0] for row in conn.execute(self._sql.revocable_ids(column), (value, stamp))]
            if ids:
                conn.execute(self._sql.revoke(column), (stamp, _now_micros(), value, stamp))
        return ids

    # -- Store protocol ------------------------------------------------------

    def get(self, token_id: str) -> TokenRecord | None:
        """The record with that id, or ``None`` (one primary-key lookup)."""
        with Lease(self._pool) as conn:
            row = conn.execute(self._sql.get, (token_id,)).fetchone()
        return None if row is None else token_record(row)

    def list_user(self, user_id: str) -> list[TokenRecord]:
        """All of a user's records, oldest first (ties by id)."""
        return self._query(self._sql.list_user, (user_id,))

    def list_family(self, family_id: str) -> list[TokenRecord]:
        """All records of a rotation family, oldest first (ties by id)."""
        return self._query(self._sql.list_family, (family_id,))

    def list_expiring(self, start: datetime, end: datetime) -> list[TokenRecord]:
        """Records with ``start < expires_at <= end`` not revoked at ``start``, soonest first."""
        begin = micros(start)
        return self._query(self._sql.list_expiring, (begin, micros(end), begin))

    def insert(self, record: TokenRecord) -> None:
        """Add a record; ``NameTaken`` on a live name clash, ValueError on a duplicate id."""
        row = token_row(normalize_record(record))
        with _constraints(record.id, record.name), Lease(self._pool) as conn:
            conn.execute(self._sql.insert, row)

    def update(self, token_id: str, changes: Mapping[str, Any]) -> TokenRecord | None:
        """Apply ``changes`` to a live record; ``None`` if unknown or not live."""
        clean = check_changes(changes)
        values = tuple(encode(k, v) for k, v in clean.items())
        stamp = not VALIDITY_FIELDS.isdisjoint(clean)
        with _constraints(token_id, clean.get("name", "")), self._transaction() as conn:
            if clean:
                now = (_now_micros(),) if stamp else ()
                conn.execute(self._sql.update(clean, stamp), (*values, *now, token_id))
            row = conn.execute(self._sql.get_live, (token_id,)).fetchone()
        return None if row is None else token_record(row)

    def revoke(self, token_id: str, at: datetime) -> list[str]:
        """Revoke the record and its predecessors revocable at ``at``, in one
        transaction; return the ids that changed, oldest first."""
        stamp = micros(at)
        with self._transaction() as conn:
            row = conn.execute(self._sql.lineage_of, (token_id,)).fetchone()
            if row is None:
                return []
            where = (row[0], row[1], token_id, stamp)
            ids = [r[0] for r in conn.execute(self._sql.lineage_ids, where)]
            if ids:
                conn.execute(self._sql.revoke_lineage, (stamp, _now_micros(), *where))
        return ids

    def revoke_family(self, family_id: str, at: datetime) -> list[str]:
        """Revoke the family's records revocable at ``at``; return their ids."""
        return self._revoke_where("family_id", family_id, at)

    def revoke_user(self, user_id: str, at: datetime) -> list[str]:
        """Revoke the user's records revocable at ``at``; return their ids."""
        return self._revoke_where("user_id", user_id, at)

    def rotate(self, old_id: str, new: TokenRecord, revoke_at: datetime) -> bool:
        """Revoke the live record ``old_id`` at ``revoke_at`` and insert ``new``, in one
        transaction. False, writing nothing, when ``old_id`` is missing or not live."""
        row = token_row(normalize_record(new))
        with _constraints(new.id, new.name), self._transaction() as conn:
            if conn.execute(self._sql.revoke_live, (micros(revoke_at), _now_micros(), old_id)).rowcount == 0:
                conn.execute("ROLLBACK")
                return False
            conn.execute(self._sql.insert, row)
        return True

    def changes_since(self, since: datetime) -> list[tuple[str, datetime]]:
        """``(id, changed_at)`` of records whose validity changed at or after ``since``
        (one range scan of the ``changed_at`` index)."""
        with Lease(self._pool) as conn:
            rows = conn.execute(self._sql.changes, (micros(since),)).fetchall()
        return [(token_id, from_micros(at)) for token_id, at in rows]

    def touch(self, token_id: str, at: datetime, ip: str | None, keep_ips: int) -> bool:
        """Record a use at ``at`` from ``ip`` (read-merge-write in one transaction);
        True when ``ip`` was not among the record's addresses."""
        with self._transaction() as conn:
            row = conn.execute(self._sql.get_ips, (token_id,)).fetchone()
            if row is None:
                return False
            known = json_tuple(row[0])
            conn.execute(self._sql.touch, (micros(at), json_text(merge_ips(known, ip, keep_ips)), token_id))
            return ip is not None and ip not in known

    def purge(self, before: datetime) -> list[str]:
        """Delete records revoked or expired at or before ``before``; return their ids."""
        stamp = micros(before)
        with self._transaction() as conn:
            ids = [row[0] for row in conn.execute(self._sql.purge_ids, (stamp, stamp))]
            if ids:
                conn.execute(self._sql.purge, (stamp, stamp))
        return ids

    def purgeable(self, before: datetime) -> list[str]:
        """The ids :meth:`purge` would delete now (its own SELECT); deletes nothing."""
        stamp = micros(before)
        with Lease(self._pool) as conn:
            return [row[0] for row in conn.execute(self._sql.purge_ids, (stamp, stamp))]

    # -- administration and the security log -------------------------------

    def search(self, query: TokenQuery) -> list[TokenRecord]:
        """Every user's records answering ``query``: one SELECT, ordered and paged along the
        ``(created_at, id)`` or ``(COALESCE(last_used_at, created_at), id)`` index."""
        clause = search_sql(query, SQLITE, micros)
        sql = self._sql.search.format(where=clause.where, order=clause.order)
        return self._query(sql, {**clause.params, "limit": query.limit})

    def append_log(self, entries: list[LogEntry]) -> None:
        """Keep log entries in one transaction (an id already kept is ignored)."""
        if entries:
            with self._transaction() as conn:
                conn.executemany(self._sql.append_log, [log_row(e) for e in entries])

    def read_log(self, query: LogQuery) -> list[LogEntry]:
        """Entries answering ``query``, newest first (by user or token: along their index)."""
        clause = log_sql(query, micros)
        sql = self._sql.read_log.format(where=clause.where, order=clause.order)
        with Lease(self._pool) as conn:
            return [log_entry(r) for r in conn.execute(sql, {**clause.params, "limit": query.limit})]

    def prune_log(self, before: datetime) -> int:
        """Delete entries dated before ``before`` and notices kept until before it."""
        stamp = micros(before)
        with self._transaction() as conn:
            gone = conn.execute(self._sql.prune_log, (stamp,)).rowcount
            conn.execute(self._sql.prune_notices, (stamp,))
        return gone

    def claim_notice(self, token_id: str, key: str, until: datetime) -> bool:
        """True the first time ``key`` is claimed for ``token_id`` (one INSERT that does
        nothing when the pair is kept already)."""
        with Lease(self._pool) as conn:
            return conn.execute(self._sql.claim, (token_id, key, micros(until))).rowcount == 1

    def close(self) -> None:
        """Close the connections. Later calls raise ``StoreUnavailable``."""
        self._pool.close()
