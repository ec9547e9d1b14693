"""SQLiteStore: the store contract (file and ``:memory:``) plus SQLite specifics:
no plaintext on disk, WAL, schema, errors, and two OS processes on one file."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from store_contract import T0, StoreContract, make_record

from pat_middleware.core.audit import LogEntry, LogQuery, entry_id
from pat_middleware.core.hashing import Argon2Hasher
from pat_middleware.core.query import TokenQuery
from pat_middleware.core.tokens import generate
from pat_middleware.errors import StoreUnavailable
from pat_middleware.stores import SQLiteStore, Store


class TestSQLiteFileStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        store = SQLiteStore(tmp_path / "tokens.db")
        yield store
        store.close()


class TestSQLiteMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> Iterator[Store]:
        store = SQLiteStore(":memory:")
        yield store
        store.close()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "tokens.db"


def _raw(conn_path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(conn_path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# -- storage -----------------------------------------------------------------


def test_no_plaintext_secret_on_disk(path: Path) -> None:
    store = SQLiteStore(path)
    token, parts = generate()
    stored_hash = Argon2Hasher().hash(parts.secret)
    record = make_record(id=parts.key_id, hash=stored_hash)
    store.insert(record)
    store.touch(record.id, T0, "192.0.2.1", 3)
    store.update(record.id, {"description": "rotated soon"})

    def disk() -> bytes:
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))

    while_open = disk()
    assert Path(str(path) + "-wal").exists()
    store.close()
    after_close = disk()
    for blob in (while_open, after_close):
        assert stored_hash.encode() in blob  # the grep does look at the data
        assert parts.secret.encode() not in blob
        assert token.encode() not in blob
    assert repr(record).find(parts.secret) == -1


def test_wal_schema_and_indexes(path: Path) -> None:
    store = SQLiteStore(path, table="tok")
    store.insert(make_record())
    assert _raw(path, "PRAGMA journal_mode") == [("wal",)]
    indexes = {name: sql for name, sql in _raw(path, "SELECT name, sql FROM sqlite_master WHERE type = 'index'")}
    assert {"tok_user", "tok_live_name", "tok_family", "tok_expires", "tok_changed"} <= set(indexes)
    assert "WHERE revoked_at IS NULL" in indexes["tok_live_name"]
    assert "UNIQUE" in indexes["tok_live_name"]
    plan = _raw(path, "EXPLAIN QUERY PLAN SELECT * FROM tok WHERE id = 'x'")
    assert "PRIMARY KEY" in plan[0][-1]
    plan = _raw(path, "EXPLAIN QUERY PLAN SELECT id, changed_at FROM tok WHERE changed_at >= 0")
    assert "INDEX tok_changed" in plan[0][-1]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    micros = (T0 - epoch) // timedelta(microseconds=1)
    assert _raw(path, "SELECT created_at, scopes FROM tok") == [(micros, "[]")]
    store.close()


def test_schema_creation_is_idempotent_and_data_persists(path: Path) -> None:
    first = SQLiteStore(path)
    record = make_record()
    first.insert(record)
    second = SQLiteStore(path)  # same file, schema already there
    assert second.get(record.id) == record
    first.close()
    second.close()
    reopened = SQLiteStore(path)
    assert reopened.list_user("alice") == [record]
    reopened.close()


#: The table as release 0.1 created it (no changed_at column).
_SCHEMA_0_1 = """
    CREATE TABLE pat_tokens (
        id TEXT PRIMARY KEY NOT NULL, user_id TEXT NOT NULL, name TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '', scopes TEXT NOT NULL DEFAULT '[]',
        hash TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER,
        last_used_at INTEGER, last_used_ips TEXT NOT NULL DEFAULT '[]', revoked_at INTEGER,
        family_id TEXT NOT NULL, rotated_from TEXT, allowed_cidrs TEXT NOT NULL DEFAULT '[]'
    ) WITHOUT ROWID;
    CREATE INDEX pat_tokens_user ON pat_tokens (user_id, created_at);
    CREATE UNIQUE INDEX pat_tokens_live_name ON pat_tokens (user_id, name) WHERE revoked_at IS NULL;
    CREATE INDEX pat_tokens_family ON pat_tokens (family_id, created_at);
    CREATE INDEX pat_tokens_expires ON pat_tokens (expires_at);
"""


def test_a_table_from_release_0_1_gets_changed_at_on_open(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(_SCHEMA_0_1)
    conn.execute(
        "INSERT INTO pat_tokens (id, user_id, name, hash, created_at, family_id)"
        " VALUES ('OLD000000000', 'alice', 'old', 'h', 0, 'OLD000000000')"
    )
    conn.commit()
    conn.close()
    store = SQLiteStore(path)
    old = store.get("OLD000000000")
    assert old is not None and old.resources is None  # opening upgrades; data untouched
    assert store.changes_since(datetime(1970, 1, 1, tzinfo=UTC)) == []
    store.revoke("OLD000000000", datetime.now(UTC))
    assert [i for i, _ in store.changes_since(datetime.now(UTC) - timedelta(minutes=1))] == ["OLD000000000"]
    store.close()
    columns = [row[1] for row in _raw(path, "PRAGMA table_info(pat_tokens)")]
    assert columns[-2:] == ["changed_at", "resources"]
    indexes = {row[0] for row in _raw(path, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "pat_tokens_changed" in indexes
    again = SQLiteStore(path)  # opening an upgraded table again changes nothing
    assert [i for i, _ in again.changes_since(datetime.now(UTC) - timedelta(minutes=1))] == ["OLD000000000"]
    again.close()


def test_a_0_1_database_gets_the_administration_indexes_and_tables_on_open(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(_SCHEMA_0_1)
    conn.execute(
        "INSERT INTO pat_tokens (id, user_id, name, hash, created_at, last_used_at, family_id)"
        " VALUES ('OLD000000000', 'alice', 'old', 'h', 0, 5, 'OLD000000000')"
    )
    conn.commit()
    conn.close()
    store = SQLiteStore(path)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert [r.id for r in store.search(TokenQuery(now=T0, unused_since=epoch + timedelta(seconds=1)))] == [
        "OLD000000000"
    ]
    entry = LogEntry(entry_id(T0), T0, "created", "OLD000000000", "alice")
    store.append_log([entry])
    assert store.read_log(LogQuery(user_id="alice")) == [entry]
    assert store.claim_notice("OLD000000000", "k", T0) is True
    store.close()
    names = {row[0] for row in _raw(path, "SELECT name FROM sqlite_master")}
    assert {"pat_tokens_created", "pat_tokens_activity", "pat_tokens_log", "pat_tokens_notices"} <= names
    assert {"pat_tokens_log_user", "pat_tokens_log_token", "pat_tokens_log_at", "pat_tokens_notices_until"} <= names
    activity = _raw(path, "SELECT sql FROM sqlite_master WHERE name = 'pat_tokens_activity'")[0][0]
    assert "COALESCE(last_used_at, created_at), id" in activity


def test_a_table_without_resources_gets_the_column_on_open(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(_SCHEMA_0_1)
    conn.execute("ALTER TABLE pat_tokens ADD COLUMN changed_at INTEGER")
    conn.execute(
        "INSERT INTO pat_tokens (id, user_id, name, hash, created_at, family_id)"
        " VALUES ('OLD000000000', 'alice', 'old', 'h', 0, 'OLD000000000')"
    )
    conn.commit()
    conn.close()
    store = SQLiteStore(path)
    old = store.get("OLD000000000")
    assert old is not None and old.resources is None  # an older token: every resource, as before
    limited = store.update("OLD000000000", {"resources": ("acme/web",)})
    assert limited is not None and limited.resources == ("acme/web",)
    store.close()
    columns = [row[1] for row in _raw(path, "PRAGMA table_info(pat_tokens)")]
    assert columns[-1] == "resources"


def test_tables_are_isolated(path: Path) -> None:
    a, b = SQLiteStore(path, table="a_tokens"), SQLiteStore(path, table="b_tokens")
    record = make_record()
    a.insert(record)
    assert b.get(record.id) is None
    b.insert(record)  # no clash across tables
    assert a.get(record.id) == b.get(record.id) == record
    a.close()
    b.close()


@pytest.mark.parametrize("table", ["", "1abc", "pat tokens", "x;DROP TABLE y", "a-b", "t" * 64])
def test_bad_table_name_is_rejected(path: Path, table: str) -> None:
    with pytest.raises(ValueError, match="identifier"):
        SQLiteStore(path, table=table)


# -- errors ------------------------------------------------------------------


def test_unopenable_database_is_unavailable(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "missing-dir" / "tokens.db")
    with pytest.raises(StoreUnavailable) as caught:
        store.get("K00000000001")
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    assert caught.value.status_code == 503
    store.close()


def test_not_a_database_is_unavailable(path: Path) -> None:
    path.write_bytes(b"this is not a database" * 100)
    store = SQLiteStore(path)
    with pytest.raises(StoreUnavailable):
        store.get("K00000000001")
    store.close()


def test_locked_database_is_unavailable_after_the_timeout(path: Path) -> None:
    store = SQLiteStore(path, timeout=0.2)
    record = make_record()
    store.insert(record)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        started = time.perf_counter()
        with pytest.raises(StoreUnavailable) as caught:
            store.revoke(record.id, T0)
        waited = time.perf_counter() - started
        assert 0.15 <= waited < 2.0
        assert "SQLITE_BUSY" in str(caught.value)
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
        assert store.get(record.id) == record  # WAL: reads go on under a writer
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.revoke(record.id, T0)  # and the store recovers
    store.close()


def test_closed_store_is_unavailable(path: Path) -> None:
    for store in (SQLiteStore(path), SQLiteStore(":memory:")):
        store.insert(make_record())
        store.close()
        with pytest.raises(StoreUnavailable):
            store.get("K00000000001")
        store.close()  # idempotent


def test_secret_never_in_errors(path: Path) -> None:
    store = SQLiteStore(path)
    token, parts = generate()
    record = make_record(id=parts.key_id, name="ci", hash=Argon2Hasher(time_cost=1).hash(parts.secret))
    store.insert(record)
    with pytest.raises(Exception) as caught:
        store.insert(record)
    text = f"{caught.value!s} {caught.value!r} {caught.value.__cause__!s}"
    assert parts.secret not in text and token not in text
    store.close()


# -- two OS processes ------------------------------------------------------------

PER_PROCESS = 120
CONTESTED = PER_PROCESS  # every iteration of both processes tries to rotate one


def _hammer(path: str, worker: int, barrier: Any, results: Any) -> None:
    """Runs in a spawned process; reports ``(worker, wins)`` or ``(worker, error text)``."""
    try:
        results.put((worker, _hammer_store(path, worker, barrier)))
    except BaseException as exc:
        results.put((worker, f"{type(exc).__name__}: {exc}"))
        raise


def _hammer_store(path: str, worker: int, barrier: Any) -> list[tuple[int, str]]:
    """Inserts, revokes and rotates its own tokens; between them, tries to rotate each
    contested token, worker 1 in ascending order and worker 2 in descending order,
    so the two meet somewhere in the middle and race on the same tokens there."""
    store = SQLiteStore(path, timeout=30)
    wins: list[tuple[int, str]] = []
    order = range(CONTESTED) if worker == 1 else range(CONTESTED - 1, -1, -1)
    assert store.get("C00000000000") is not None  # connection open, schema checked
    barrier.wait(30)
    for i, c in enumerate(order):
        successor = make_record(id=f"R{worker}{c:010d}", name=f"contested-{c}",
                                family_id=f"C{c:011d}", rotated_from=f"C{c:011d}")  # fmt: skip
        if store.rotate(f"C{c:011d}", successor, T0):
            wins.append((c, successor.id))
        record = make_record(id=f"P{worker}{i:010d}", user_id=f"proc{worker}", name=f"t{i}")
        store.insert(record)
        if i % 4 == 1:
            assert store.revoke(record.id, T0)
        elif i % 4 == 2:
            new = make_record(id=f"N{worker}{i:010d}", user_id=record.user_id, name=record.name,
                              family_id=record.id, rotated_from=record.id)  # fmt: skip
            assert store.rotate(record.id, new, T0)
    store.close()
    return wins


@pytest.mark.slow
def test_two_processes_lose_nothing(path: Path) -> None:
    setup = SQLiteStore(path)
    for i in range(CONTESTED):
        setup.insert(make_record(id=f"C{i:011d}", name=f"contested-{i}"))
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(str(path), w, barrier, results)) for w in (1, 2)]
    for proc in procs:
        proc.start()
    outcome = dict(results.get(timeout=60) for _ in procs)
    for proc in procs:
        proc.join(30)
    assert [proc.exitcode for proc in procs] == [0, 0], outcome

    rotated = sum(1 for i in range(PER_PROCESS) if i % 4 == 2)
    revoked = sum(1 for i in range(PER_PROCESS) if i % 4 == 1)
    for worker in (1, 2):
        listed = setup.list_user(f"proc{worker}")
        assert len(listed) == PER_PROCESS + rotated
        assert sum(r.revoked_at is not None for r in listed) == revoked + rotated
        assert {r.id for r in listed} == (
            {f"P{worker}{i:010d}" for i in range(PER_PROCESS)}
            | {f"N{worker}{i:010d}" for i in range(PER_PROCESS) if i % 4 == 2}
        )
    winners = sorted(outcome[1] + outcome[2])
    assert [i for i, _ in winners] == list(range(CONTESTED))  # exactly one winner each
    for i, winner_id in winners:
        family = setup.list_family(f"C{i:011d}")
        assert [r.id for r in family] == [f"C{i:011d}", winner_id]
        assert [r.revoked_at for r in family] == [T0, None]
    assert setup.list_expiring(T0, T0 + timedelta(days=1)) == []
    assert _raw(path, "PRAGMA integrity_check") == [("ok",)]
    setup.close()
