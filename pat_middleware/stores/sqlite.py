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
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from pat_middleware.core.models import TokenRecord, utc
from pat_middleware.errors import NameTaken
from pat_middleware.stores._common import TUPLE_FIELDS, check_changes, merge_ips, normalize_record
from pat_middleware.stores._sqlite_pool import Lease, Pool
from pat_middleware.stores.base import VALIDITY_FIELDS

__all__ = ["SQLiteStore"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_COLUMNS = (
    "id, user_id, name, description, scopes, hash, created_at, expires_at, "
    "last_used_at, last_used_ips, revoked_at, family_id, rotated_from, allowed_cidrs, resources"
)
_REVOCABLE = "(revoked_at IS NULL OR revoked_at > ?)"
_PURGEABLE = "(revoked_at <= ? OR expires_at <= ?)"


def _now_micros() -> int:
    """This host's clock, as stored (the feed's stamp: SQLite has no server clock)."""
    return time.time_ns() // 1000


def _micros(value: datetime) -> int:
    return (utc(value) - _EPOCH) // _MICROSECOND


def _maybe_micros(value: datetime | None) -> int | None:
    return None if value is None else _micros(value)


def _datetime(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=value)


def _json(values: Iterable[str]) -> str:
    return json.dumps(list(values), separators=(",", ":"))


@lru_cache(maxsize=4096)
def _tuple(text: str) -> tuple[str, ...]:
    """A JSON array column as a tuple (memoised: scope lists repeat across tokens)."""
    return tuple(json.loads(text))


def _maybe_json(values: Iterable[str] | None) -> str | None:
    return None if values is None else _json(values)


def _encode(field: str, value: Any) -> Any:
    """A normalised field value as stored in its column."""
    if field == "resources":
        return _maybe_json(value)
    if field in TUPLE_FIELDS:
        return _json(value)
    if isinstance(value, datetime):
        return _micros(value)
    return value


def _row(r: TokenRecord) -> tuple[Any, ...]:
    return (
        r.id, r.user_id, r.name, r.description, _json(r.scopes), r.hash,
        _micros(r.created_at), _maybe_micros(r.expires_at), _maybe_micros(r.last_used_at),
        _json(r.last_used_ips), _maybe_micros(r.revoked_at), r.family_id, r.rotated_from,
        _json(r.allowed_cidrs), _maybe_json(r.resources),
    )  # fmt: skip


def _record(row: tuple[Any, ...]) -> TokenRecord:
    (id_, user_id, name, description, scopes, hash_, created_at, expires_at,
     last_used_at, last_used_ips, revoked_at, family_id, rotated_from, cidrs, resources) = row  # fmt: skip
    return TokenRecord(
        id=id_, user_id=user_id, name=name, description=description,
        scopes=_tuple(scopes), hash=hash_,
        created_at=_EPOCH + timedelta(microseconds=created_at),
        expires_at=_datetime(expires_at), last_used_at=_datetime(last_used_at),
        last_used_ips=_tuple(last_used_ips), revoked_at=_datetime(revoked_at),
        family_id=family_id, rotated_from=rotated_from, allowed_cidrs=_tuple(cidrs),
        resources=None if resources is None else _tuple(resources),
    )  # fmt: skip


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
        self.get = f"SELECT {_COLUMNS} FROM {t} WHERE id = ?"
        self.get_live = f"SELECT {_COLUMNS} FROM {t} WHERE id = ? AND revoked_at IS NULL"
        self.list_user = f"SELECT {_COLUMNS} FROM {t} WHERE user_id = ? ORDER BY created_at, id"
        self.list_family = f"SELECT {_COLUMNS} FROM {t} WHERE family_id = ? ORDER BY created_at, id"
        self.list_expiring = (
            f"SELECT {_COLUMNS} FROM {t} WHERE expires_at > ? AND expires_at <= ?"
            f" AND {_REVOCABLE} ORDER BY expires_at, id"
        )
        self.insert = f"INSERT INTO {t} ({_COLUMNS}) VALUES ({', '.join('?' * 15)})"
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

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[TokenRecord]:
        with Lease(self._pool) as conn:
            return [_record(row) for row in conn.execute(sql, params)]

    def _revoke_where(self, column: str, value: str, at: datetime) -> list[str]:
        stamp = _micros(at)
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
        return None if row is None else _record(row)

    def list_user(self, user_id: str) -> list[TokenRecord]:
        """All of a user's records, oldest first (ties by id)."""
        return self._query(self._sql.list_user, (user_id,))

    def list_family(self, family_id: str) -> list[TokenRecord]:
        """All records of a rotation family, oldest first (ties by id)."""
        return self._query(self._sql.list_family, (family_id,))

    def list_expiring(self, start: datetime, end: datetime) -> list[TokenRecord]:
        """Records with ``start < expires_at <= end`` not revoked at ``start``, soonest first."""
        begin = _micros(start)
        return self._query(self._sql.list_expiring, (begin, _micros(end), begin))

    def insert(self, record: TokenRecord) -> None:
        """Add a record; ``NameTaken`` on a live name clash, ValueError on a duplicate id."""
        row = _row(normalize_record(record))
        with _constraints(record.id, record.name), Lease(self._pool) as conn:
            conn.execute(self._sql.insert, row)

    def update(self, token_id: str, changes: Mapping[str, Any]) -> TokenRecord | None:
        """Apply ``changes`` to a live record; ``None`` if unknown or not live."""
        clean = check_changes(changes)
        values = tuple(_encode(k, v) for k, v in clean.items())
        stamp = not VALIDITY_FIELDS.isdisjoint(clean)
        with _constraints(token_id, clean.get("name", "")), self._transaction() as conn:
            if clean:
                now = (_now_micros(),) if stamp else ()
                conn.execute(self._sql.update(clean, stamp), (*values, *now, token_id))
            row = conn.execute(self._sql.get_live, (token_id,)).fetchone()
        return None if row is None else _record(row)

    def revoke(self, token_id: str, at: datetime) -> list[str]:
        """Revoke the record and its predecessors revocable at ``at``, in one
        transaction; return the ids that changed, oldest first."""
        stamp = _micros(at)
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
        row = _row(normalize_record(new))
        with _constraints(new.id, new.name), self._transaction() as conn:
            if conn.execute(self._sql.revoke_live, (_micros(revoke_at), _now_micros(), old_id)).rowcount == 0:
                conn.execute("ROLLBACK")
                return False
            conn.execute(self._sql.insert, row)
        return True

    def changes_since(self, since: datetime) -> list[tuple[str, datetime]]:
        """``(id, changed_at)`` of records whose validity changed at or after ``since``
        (one range scan of the ``changed_at`` index)."""
        with Lease(self._pool) as conn:
            rows = conn.execute(self._sql.changes, (_micros(since),)).fetchall()
        return [(token_id, _EPOCH + timedelta(microseconds=at)) for token_id, at in rows]

    def touch(self, token_id: str, at: datetime, ip: str | None, keep_ips: int) -> None:
        """Record a use at ``at`` from ``ip`` (read-merge-write in one transaction)."""
        with self._transaction() as conn:
            row = conn.execute(self._sql.get_ips, (token_id,)).fetchone()
            if row is not None:
                ips = merge_ips(_tuple(row[0]), ip, keep_ips)
                conn.execute(self._sql.touch, (_micros(at), _json(ips), token_id))

    def purge(self, before: datetime) -> list[str]:
        """Delete records revoked or expired at or before ``before``; return their ids."""
        stamp = _micros(before)
        with self._transaction() as conn:
            ids = [row[0] for row in conn.execute(self._sql.purge_ids, (stamp, stamp))]
            if ids:
                conn.execute(self._sql.purge, (stamp, stamp))
        return ids

    def purgeable(self, before: datetime) -> list[str]:
        """The ids :meth:`purge` would delete now (its own SELECT); deletes nothing."""
        stamp = _micros(before)
        with Lease(self._pool) as conn:
            return [row[0] for row in conn.execute(self._sql.purge_ids, (stamp, stamp))]

    def close(self) -> None:
        """Close the connections. Later calls raise ``StoreUnavailable``."""
        self._pool.close()
