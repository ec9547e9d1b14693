"""SQLAlchemyStore: the store contract on PostgreSQL (sync and async) and SQLite
(sync and aiosqlite), plus PostgreSQL specifics: real races between threads and
between OS processes, the partial unique index, schema management, engines the
app owns, and errors when the database is down or the table is missing."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from sqlalchemy import create_engine, inspect
from sqlalchemy.ext.asyncio import create_async_engine
from store_contract import T0, StoreContract, SyncOverAsync, make_record

from pat_middleware.core.audit import LogEntry, LogQuery, entry_id
from pat_middleware.core.query import TokenQuery
from pat_middleware.errors import NameTaken, StoreUnavailable
from pat_middleware.stores import Store, store_from_url
from pat_middleware.stores.sqlalchemy import (
    AsyncSQLAlchemyStore,
    SQLAlchemyStore,
    metadata,
    pat_tokens,
    token_table,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    # the inspector cannot reflect SQLite's expression index (the activity index); the tests read sqlite_master
    pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index"),
]

DOWN_URL = "postgresql://postgres:sekret-pw@127.0.0.1:1/test"


def _table() -> str:
    return f"pat_tokens_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def table() -> str:
    """A table name unique to the test."""
    return _table()


@pytest.fixture
def pg_store(sqlalchemy_postgres_url: str, table: str) -> Iterator[SQLAlchemyStore]:
    """A sync PostgreSQL store on a fresh table, dropped afterwards."""
    store = SQLAlchemyStore(sqlalchemy_postgres_url, table_name=table)
    store.create_schema()
    yield store
    store.drop_schema()
    store.close()


# -- the contract -------------------------------------------------------------------


@pytest.mark.postgres
class TestPostgresSync(StoreContract):
    @pytest.fixture
    def store(self, pg_store: SQLAlchemyStore) -> Store:
        return pg_store


@pytest.mark.postgres
class TestPostgresAsync(StoreContract):
    @pytest.fixture
    def store(self, pg_store: SQLAlchemyStore) -> Iterator[Store]:
        async_store = pg_store.async_store
        assert isinstance(async_store, AsyncSQLAlchemyStore)
        adapter = SyncOverAsync(async_store)
        yield adapter
        adapter.close()


class TestSQLiteFileSync(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        store = SQLAlchemyStore(f"sqlite:///{tmp_path / 'tokens.db'}")
        yield store
        store.close()


class TestSQLiteMemorySync(StoreContract):
    @pytest.fixture
    def store(self) -> Iterator[Store]:
        store = SQLAlchemyStore("sqlite://")
        yield store
        store.close()


class TestSQLiteAsync(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        store = SQLAlchemyStore(f"sqlite+aiosqlite:///{tmp_path / 'tokens.db'}")
        assert store.async_store is not None
        adapter = SyncOverAsync(store.async_store)
        yield adapter
        adapter.close()
        store.close()


class TestSQLiteAsyncMemory(StoreContract):
    """One shared in-memory connection: the async runner must serialise transactions."""

    @pytest.fixture
    def store(self) -> Iterator[Store]:
        store = SQLAlchemyStore("sqlite+aiosqlite://")
        assert store.async_store is not None
        adapter = SyncOverAsync(store.async_store)
        yield adapter
        adapter.close()
        store.close()


# -- races, made real with a row lock -------------------------------------------------


def _lock_waiters(postgres_url: str) -> int:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return int(row[0])


@contextmanager
def row_locked(postgres_url: str, table: str, token_id: str) -> Iterator[Callable[[int], None]]:
    """Hold ``FOR UPDATE`` on one row; yields ``wait_for(n)`` (n sessions queued on it).
    The lock is released (commit) when the block ends, so the waiters race."""
    holder = psycopg.connect(postgres_url)
    try:
        locked = holder.execute(f'SELECT id FROM "{table}" WHERE id = %s FOR UPDATE', (token_id,))
        assert locked.fetchone() is not None

        def wait_for(n: int) -> None:
            deadline = time.monotonic() + 60
            while _lock_waiters(postgres_url) < n:
                assert time.monotonic() < deadline, f"{n} sessions never queued on the row lock"
                time.sleep(0.02)

        yield wait_for
        holder.commit()
    finally:
        holder.close()


def _successor(old_id: str, new_id: str | None = None) -> Any:
    fields: dict[str, Any] = {"name": "contested", "family_id": old_id, "rotated_from": old_id}
    if new_id is not None:
        fields["id"] = new_id
    return make_record(created_at=T0 + timedelta(days=1), **fields)


def _assert_one_rotation(store: SQLAlchemyStore, old_id: str, results: dict[str, bool]) -> None:
    assert sorted(results.values()) == [False, True], results
    winner = next(new_id for new_id, won in results.items() if won)
    family = store.list_family(old_id)
    assert [r.id for r in family] == [old_id, winner]
    assert family[0].revoked_at == T0
    assert family[1].revoked_at is None
    assert [r.id for r in store.list_user("alice") if r.revoked_at is None] == [winner]


@pytest.mark.postgres
def test_concurrent_rotate_from_two_threads(pg_store: SQLAlchemyStore, postgres_url: str, table: str) -> None:
    for _ in range(3):
        old = make_record(name="contested")
        pg_store.insert(old)
        rivals = [_successor(old.id), _successor(old.id)]
        results: dict[str, bool] = {}

        def rotate(new: Any) -> None:
            results[new.id] = pg_store.rotate(old.id, new, T0)

        with row_locked(postgres_url, table, old.id) as wait_for:
            threads = [threading.Thread(target=rotate, args=(new,)) for new in rivals]
            for thread in threads:
                thread.start()
            wait_for(2)  # both UPDATEs are blocked on the same row: a true race on release
        for thread in threads:
            thread.join(30)
        _assert_one_rotation(pg_store, old.id, results)
        assert pg_store.revoke_user("alice", T0) != []  # frees the name for the next round


def _rotate_in_process(url: str, table: str, old_id: str, new_id: str, results: Any) -> None:
    """Runs in a spawned process: one rotation attempt through its own engine."""
    store = SQLAlchemyStore(url, table_name=table)
    try:
        results.put((new_id, store.rotate(old_id, _successor(old_id, new_id), T0)))
    except BaseException as error:  # report, don't hang the parent
        results.put((new_id, repr(error)))
    finally:
        store.close()


@pytest.mark.postgres
@pytest.mark.slow
def test_concurrent_rotate_from_two_processes(
    pg_store: SQLAlchemyStore, sqlalchemy_postgres_url: str, postgres_url: str, table: str
) -> None:
    old = make_record(name="contested")
    pg_store.insert(old)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    new_ids = ["Proc00000001", "Proc00000002"]
    with row_locked(postgres_url, table, old.id) as wait_for:
        procs = [
            ctx.Process(
                target=_rotate_in_process,
                args=(sqlalchemy_postgres_url, table, old.id, new_id, queue),
            )
            for new_id in new_ids
        ]
        for proc in procs:
            proc.start()
        wait_for(2)
    results = dict(queue.get(timeout=60) for _ in procs)
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    assert set(results) == set(new_ids)
    _assert_one_rotation(pg_store, old.id, results)


@pytest.mark.postgres
@pytest.mark.parametrize("first", ["revoke", "rotate"])
def test_concurrent_revoke_and_rotate_are_consistent(
    pg_store: SQLAlchemyStore, postgres_url: str, table: str, first: str
) -> None:
    """Whoever gets the row lock first wins; the other sees the token is no longer live."""
    old = make_record(name="contested")
    pg_store.insert(old)
    new = _successor(old.id)
    revoke_at = T0 + timedelta(hours=1)
    results: dict[str, bool] = {}
    calls = {
        "revoke": lambda: results.__setitem__("revoke", pg_store.revoke(old.id, revoke_at) == [old.id]),
        "rotate": lambda: results.__setitem__("rotate", pg_store.rotate(old.id, new, T0)),
    }
    order = [first, "rotate" if first == "revoke" else "revoke"]
    with row_locked(postgres_url, table, old.id) as wait_for:
        threads = []
        for n, name in enumerate(order, start=1):
            threads.append(threading.Thread(target=calls[name]))
            threads[-1].start()
            wait_for(n)  # queue them in a known order
    for thread in threads:
        thread.join(30)
    assert results == {first: True, order[1]: False}
    family = pg_store.list_family(old.id)
    if first == "revoke":
        assert [r.id for r in family] == [old.id]
        assert family[0].revoked_at == revoke_at
    else:
        assert [r.id for r in family] == [old.id, new.id]
        assert family[0].revoked_at == T0
        assert family[1].revoked_at is None


@pytest.mark.postgres
def test_concurrent_create_schema_is_idempotent(sqlalchemy_postgres_url: str) -> None:
    name = _table()
    stores = [SQLAlchemyStore(sqlalchemy_postgres_url, table_name=name) for _ in range(4)]
    barrier = threading.Barrier(len(stores))

    def create(store: SQLAlchemyStore) -> None:
        barrier.wait()
        store.create_schema()

    try:
        with ThreadPoolExecutor(len(stores)) as pool:
            list(pool.map(create, stores))
        stores[0].create_schema()
        stores[1].insert(make_record())
        assert len(stores[2].list_user("alice")) == 1
    finally:
        stores[0].drop_schema()
        for store in stores:
            store.close()


# -- schema ---------------------------------------------------------------------------


@pytest.mark.postgres
def test_partial_unique_index_lets_a_name_be_reused_after_revoke(
    pg_store: SQLAlchemyStore, postgres_url: str, table: str
) -> None:
    with psycopg.connect(postgres_url) as conn:
        defs = [row[0] for row in conn.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s", (table,))]
    live = [d for d in defs if f"uq_{table}_live_name" in d]
    assert len(live) == 1
    assert live[0].startswith("CREATE UNIQUE INDEX")
    assert "(user_id, name) WHERE (revoked_at IS NULL)" in live[0]
    assert {f"ix_{table}_user_id", f"ix_{table}_family_id", f"ix_{table}_expires_at"} <= {d.split()[2] for d in defs}
    first = make_record(name="deploy")
    pg_store.insert(first)
    with pytest.raises(NameTaken):
        pg_store.insert(make_record(name="deploy"))
    assert pg_store.revoke(first.id, T0) == [first.id]
    again = make_record(name="deploy")
    pg_store.insert(again)
    assert [r.id for r in pg_store.list_user("alice") if r.revoked_at is None] == [again.id]


def test_sqlite_gets_the_partial_unique_index(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = SQLAlchemyStore(f"sqlite:///{path}", table_name="api_tokens")
    store.create_schema()
    store.close()
    with sqlite3.connect(path) as conn:
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'uq_api_tokens_live_name'").fetchone()[0]
    assert "UNIQUE INDEX" in sql and "WHERE revoked_at IS NULL" in sql


@pytest.mark.postgres
def test_module_metadata_creates_the_default_table_on_a_fresh_database(postgres_url: str) -> None:
    name = f"pat_meta_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(postgres_url)
    url = urlunsplit(("postgresql+psycopg", parts.netloc, "/" + name, parts.query, ""))
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    engine = create_engine(url)
    try:
        assert pat_tokens.name == "pat_tokens" and pat_tokens.metadata is metadata
        metadata.create_all(engine)
        metadata.create_all(engine)  # idempotent
        found = inspect(engine)
        assert found.get_table_names() == ["pat_tokens", "pat_tokens_log", "pat_tokens_notices"]
        indexes = {ix["name"]: ix for ix in found.get_indexes("pat_tokens")}
        assert indexes["uq_pat_tokens_live_name"]["unique"]
        store = SQLAlchemyStore(engine)  # default table name, schema made by the app
        record = make_record()
        store.insert(record)
        assert store.get(record.id) == record
        store.close()
    finally:
        engine.dispose()
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_token_table_in_the_apps_own_metadata(sqlalchemy_postgres_url: str) -> None:
    from sqlalchemy import MetaData

    app_metadata = MetaData()
    name = _table()
    table = token_table(app_metadata, name)
    assert app_metadata.tables[name] is table
    assert set(app_metadata.tables) == {name, f"{name}_log", f"{name}_notices"}  # its companions too
    engine = create_engine(sqlalchemy_postgres_url)
    try:
        app_metadata.create_all(engine)
        store = SQLAlchemyStore(engine, table_name=name)
        record = make_record()
        store.insert(record)
        assert store.list_user("alice") == [record]
        store.close()
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]  # QueuePool
    finally:
        app_metadata.drop_all(engine)
        engine.dispose()


@pytest.mark.postgres
def test_table_name_override(sqlalchemy_postgres_url: str, table: str) -> None:
    store = SQLAlchemyStore(sqlalchemy_postgres_url, table_name=table)
    assert store.table.name == table
    assert store.engine is not None
    try:
        before = set(inspect(store.engine).get_table_names())  # other tests may own tables here
        assert table not in before
        store.create_schema()
        store.create_schema()  # idempotent
        # only the named table and its companions (the security log, sent notices)
        assert set(inspect(store.engine).get_table_names()) - before == {table, f"{table}_log", f"{table}_notices"}
        record = make_record()
        store.insert(record)
        with psycopg.connect(store.engine.url.set(drivername="postgresql").render_as_string(False)) as conn:
            assert conn.execute(f'SELECT id FROM "{table}"').fetchall() == [(record.id,)]
    finally:
        store.drop_schema()
        store.close()


@pytest.mark.postgres
def test_missing_table_says_run_pat_db_init(sqlalchemy_postgres_url: str, table: str) -> None:
    store = SQLAlchemyStore(sqlalchemy_postgres_url, table_name=table)  # no create_schema on PostgreSQL
    async_store = store.async_store
    assert async_store is not None
    try:
        calls: list[Callable[[], Any]] = [lambda: store.get("K00000000001"), lambda: store.insert(make_record())]
        for call in calls:
            with pytest.raises(StoreUnavailable, match="pat db init") as caught:
                call()
            assert table in str(caught.value)
        with pytest.raises(StoreUnavailable, match="pat db init"):
            asyncio.run(_get_and_close(async_store, "K00000000001"))
    finally:
        store.close()


async def _get_and_close(store: AsyncSQLAlchemyStore, token_id: str) -> Any:
    try:
        return await store.get(token_id)
    finally:
        await store.close()


@pytest.mark.postgres
def test_create_schema_flag_creates_on_first_use(sqlalchemy_postgres_url: str, table: str) -> None:
    store = SQLAlchemyStore(sqlalchemy_postgres_url, table_name=table, create_schema=True)
    try:
        assert store.get("K00000000001") is None
        assert store.engine is not None and table in inspect(store.engine).get_table_names()
    finally:
        store.drop_schema()
        store.close()


# -- upgrading a table from release 0.1 (no changed_at) ----------------------------------


#: Indexes release 0.2 adds for administration (and the log and notice tables').
_ADMIN_INDEXES = ("created", "activity", "scopes", "log_user", "log_token", "log_at", "notices_until")


def _downgrade_to_0_1(store: SQLAlchemyStore) -> None:
    """Make the store's table look as release 0.1 created it: no changed_at, no index on
    it, none of the administration indexes, no log or notice table."""
    assert store.engine is not None
    name = store.table.name
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f'DROP INDEX IF EXISTS "ix_{name}_changed_at"')
        conn.exec_driver_sql(f'ALTER TABLE "{name}" DROP COLUMN changed_at')
        for index in ("created", "activity", "scopes"):
            conn.exec_driver_sql(f'DROP INDEX IF EXISTS "ix_{name}_{index}"')
        conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}_log"')
        conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}_notices"')


def _admin_schema(store: SQLAlchemyStore) -> set[str]:
    """Which of the administration indexes exist (read from the catalogue: SQLAlchemy
    does not reflect SQLite's expression indexes)."""
    assert store.engine is not None
    with store.engine.connect() as conn:
        sql = "SELECT name FROM sqlite_master" if conn.dialect.name == "sqlite" else "SELECT indexname FROM pg_indexes"
        present = {row[0] for row in conn.exec_driver_sql(sql)}
    return {index for index in _ADMIN_INDEXES if f"ix_{store.table.name}_{index}" in present}


def _admin_works(store: SQLAlchemyStore, record: Any) -> None:
    """Search, the log and notices answer on the upgraded database."""
    assert [r.id for r in store.search(TokenQuery(now=T0, sort="last_used_at"))] == [record.id]
    entry = LogEntry(entry_id(T0), T0, "created", record.id, record.user_id)
    store.append_log([entry])
    assert store.read_log(LogQuery(user_id=record.user_id)) == [entry]
    assert store.claim_notice(record.id, "k", T0) is True


def _has_changed_at(store: SQLAlchemyStore) -> bool:
    assert store.engine is not None
    found = inspect(store.engine)
    columns = {c["name"] for c in found.get_columns(store.table.name)}
    indexes = {ix["name"]: ix["column_names"] for ix in found.get_indexes(store.table.name)}
    has_index = indexes.get(f"ix_{store.table.name}_changed_at") == ["changed_at"]
    assert ("changed_at" in columns) == has_index
    return has_index


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_pat_db_init_upgrades_a_table_from_release_0_1(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, table: str
) -> None:
    if backend == "postgresql":
        url = request.getfixturevalue("sqlalchemy_postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'tokens.db'}"
    setup = SQLAlchemyStore(url, table_name=table, create_schema=False)
    setup.create_schema()
    record = make_record()
    setup.insert(record)
    _downgrade_to_0_1(setup)
    assert not _has_changed_at(setup)
    setup.close()

    store = SQLAlchemyStore(url, table_name=table, create_schema=False)  # as a new release meets it
    try:
        assert store.get(record.id) == record  # lookups still work
        assert store.list_user("alice") == [record]
        for write in (lambda: store.revoke(record.id, T0), lambda: store.changes_since(T0)):
            with pytest.raises(StoreUnavailable, match=r"changed_at.*pat db init"):
                write()
        assert store.get(record.id) == record  # the failed write changed nothing
        assert _admin_schema(store) == set()
        assert store.search(TokenQuery(now=T0)) == [record]  # without its indexes: slower, still right
        with pytest.raises(StoreUnavailable, match=rf"table '{table}_log' does not exist: run `pat db init`"):
            store.read_log(LogQuery())
        store.create_schema()  # what `pat db init` runs
        store.create_schema()  # idempotent
        assert _has_changed_at(store)
        expected = set(_ADMIN_INDEXES) - ({"scopes"} if backend == "sqlite" else set())  # GIN: PostgreSQL only
        assert _admin_schema(store) == expected
        assert store.get(record.id) == record
        _admin_works(store, record)
        assert store.revoke(record.id, T0) == [record.id]
        assert [i for i, _ in store.changes_since(T0 - timedelta(days=3650))] == [record.id]
    finally:
        store.drop_schema()
        store.close()


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_pat_db_init_adds_the_resources_column(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, table: str
) -> None:
    if backend == "postgresql":
        url = request.getfixturevalue("sqlalchemy_postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'tokens.db'}"
    setup = SQLAlchemyStore(url, table_name=table, create_schema=False)
    setup.create_schema()
    record = make_record()
    setup.insert(record)
    assert setup.engine is not None
    with setup.engine.begin() as conn:
        conn.exec_driver_sql(f'ALTER TABLE "{table}" DROP COLUMN resources')
    setup.close()

    store = SQLAlchemyStore(url, table_name=table, create_schema=False)  # as the new release meets it
    try:
        with pytest.raises(StoreUnavailable, match=r"resources column.*pat db init"):
            store.get(record.id)
        store.create_schema()  # what `pat db init` runs
        store.create_schema()  # idempotent
        assert store.get(record.id) == record and record.resources is None
        limited = store.update(record.id, {"resources": ("acme/web",)})
        assert limited is not None and limited.resources == ("acme/web",)
    finally:
        store.drop_schema()
        store.close()


def test_sqlite_upgrades_a_0_1_table_on_first_use(tmp_path: Path, table: str) -> None:
    url = f"sqlite:///{tmp_path / 'tokens.db'}"
    setup = SQLAlchemyStore(url, table_name=table)
    setup.create_schema()
    _downgrade_to_0_1(setup)
    setup.close()
    store = SQLAlchemyStore(url, table_name=table)  # create_schema defaults to True on SQLite
    assert store.get("K00000000001") is None
    assert _has_changed_at(store)
    assert _admin_schema(store) == set(_ADMIN_INDEXES) - {"scopes"}
    store.close()


@pytest.mark.postgres
def test_concurrent_upgrades_are_idempotent(sqlalchemy_postgres_url: str, table: str) -> None:
    stores = [SQLAlchemyStore(sqlalchemy_postgres_url, table_name=table) for _ in range(4)]
    stores[0].create_schema()
    _downgrade_to_0_1(stores[0])
    barrier = threading.Barrier(len(stores))

    def upgrade(store: SQLAlchemyStore) -> None:
        barrier.wait()
        store.create_schema()

    try:
        with ThreadPoolExecutor(len(stores)) as pool:
            list(pool.map(upgrade, stores))
        assert _has_changed_at(stores[1])
        assert _admin_schema(stores[1]) == set(_ADMIN_INDEXES)
    finally:
        stores[0].drop_schema()
        for store in stores:
            store.close()


@pytest.mark.postgres
def test_changes_since_is_one_index_scan(pg_store: SQLAlchemyStore, table: str) -> None:
    assert pg_store.engine is not None
    with pg_store.engine.connect() as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")  # a tiny table would be scanned otherwise
        plan = conn.exec_driver_sql(
            f"EXPLAIN SELECT id, changed_at FROM \"{table}\" WHERE changed_at >= now() - interval '1 minute'"
        ).fetchall()
    assert f"ix_{table}_changed_at" in " ".join(row[0] for row in plan)


# -- errors -------------------------------------------------------------------------------


def test_database_down_is_store_unavailable_sync_and_async() -> None:
    store = SQLAlchemyStore(DOWN_URL)
    assert "sekret-pw" not in repr(store)
    async_store = store.async_store
    assert async_store is not None
    calls: list[Callable[[], Any]] = [
        lambda: store.get("K00000000001"),
        lambda: store.insert(make_record()),
        lambda: store.rotate("K00000000001", make_record(), T0),
        store.create_schema,
        lambda: asyncio.run(_get_and_close(async_store, "K00000000001")),
    ]
    try:
        for call in calls:
            with pytest.raises(StoreUnavailable) as caught:
                call()
            error = caught.value
            assert error.status_code == 503
            assert error.__cause__ is not None  # the driver's error, chained
            assert "sqlalchemy" not in type(error.__cause__).__module__
            for text in (str(error), repr(error), str(error.__cause__)):
                assert "sekret-pw" not in text and "argon2" not in text
    finally:
        store.close()


@pytest.mark.postgres
def test_pool_timeout_is_store_unavailable(sqlalchemy_postgres_url: str, pg_store: SQLAlchemyStore) -> None:
    store = SQLAlchemyStore(
        sqlalchemy_postgres_url,
        table_name=pg_store.table.name,
        engine_options={"pool_size": 1, "max_overflow": 0, "pool_timeout": 0.2},
    )
    assert store.engine is not None
    try:
        with store.engine.connect(), pytest.raises(StoreUnavailable, match="TimeoutError"):
            store.get("K00000000001")  # the only connection is busy
        assert store.get("K00000000001") is None
    finally:
        store.close()


@pytest.mark.postgres
def test_integrity_errors_carry_no_record_material(pg_store: SQLAlchemyStore) -> None:
    record = make_record(hash="$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$VERYSECRETISH")
    pg_store.insert(record)
    for clash, expected in (
        (make_record(id=record.id, name="other"), ValueError),
        (make_record(name=record.name), NameTaken),
    ):
        with pytest.raises(expected) as caught:
            pg_store.insert(clash.evolve(hash=record.hash))
        chain = [caught.value, caught.value.__cause__]
        assert all("VERYSECRETISH" not in str(e) and "VERYSECRETISH" not in repr(e) for e in chain)
    with pytest.raises(ValueError, match="already exists"):
        pg_store.insert(make_record(id=record.id, name="x"))


@pytest.mark.postgres
@pytest.mark.parametrize("fields", [{"user_id": "u" * 300}, {"name": "nul\x00byte"}, {"id": "TooLongId0000"}], ids=str)
def test_values_the_column_rejects_are_value_errors(pg_store: SQLAlchemyStore, fields: dict[str, str]) -> None:
    record = make_record(**fields)
    with pytest.raises(ValueError) as caught:
        pg_store.insert(record)
    assert record.hash not in str(caught.value)
    assert pg_store.list_user(record.user_id) == []


def test_bad_arguments_are_type_errors() -> None:
    with pytest.raises(TypeError):
        SQLAlchemyStore(42)  # type: ignore[arg-type]
    async_engine = create_async_engine("sqlite+aiosqlite://")
    with pytest.raises(TypeError):
        SQLAlchemyStore("sqlite://", async_engine=async_engine)


# -- engines the app owns ---------------------------------------------------------------------


@pytest.mark.postgres
def test_close_leaves_the_apps_engines_alone(sqlalchemy_postgres_url: str, table: str) -> None:
    engine = create_engine(sqlalchemy_postgres_url)
    async_engine = create_async_engine(sqlalchemy_postgres_url)
    store = SQLAlchemyStore(engine, async_engine=async_engine, table_name=table)
    assert store.engine is engine and store.async_store is not None
    assert store.async_store.engine is async_engine
    pool, async_pool = engine.pool, async_engine.sync_engine.pool

    async def use_async() -> None:
        assert store.async_store is not None
        record = make_record()
        await store.async_store.insert(record)
        assert await store.async_store.get(record.id) == record
        await store.async_store.close()
        assert async_engine.sync_engine.pool is async_pool  # not disposed
        await async_engine.dispose()

    try:
        store.create_schema()
        store.insert(make_record())
        asyncio.run(use_async())
        store.close()
        assert engine.pool is pool  # not disposed
        assert len(SQLAlchemyStore(engine, table_name=table).list_user("alice")) == 2
    finally:
        SQLAlchemyStore(engine, table_name=table).drop_schema()
        engine.dispose()


@pytest.mark.postgres
def test_async_engine_only_gets_a_sync_twin(sqlalchemy_postgres_url: str, table: str) -> None:
    async_engine = create_async_engine(sqlalchemy_postgres_url)
    store = SQLAlchemyStore(async_engine, table_name=table)
    assert store.engine is not None and store.engine.dialect.driver == "psycopg"
    assert not store.engine.dialect.is_async
    record = make_record()

    async def use_async() -> None:
        assert store.async_store is not None
        await store.async_store.create_schema()
        await store.async_store.insert(record)
        await store.async_store.close()
        await async_engine.dispose()

    try:
        asyncio.run(use_async())
        assert store.get(record.id) == record  # the sync twin sees the async write
    finally:
        store.drop_schema()
        store.close()


def test_async_only_url_without_a_sync_twin_explains() -> None:
    store = SQLAlchemyStore("sqlite+aiosqlite://")  # in-memory: a second engine would be another db
    assert store.engine is None
    with pytest.raises(RuntimeError, match="no sync engine"):
        store.get("K00000000001")
    assert store.async_store is not None
    record = make_record()

    async def use_async() -> Any:
        assert store.async_store is not None
        await store.async_store.insert(record)
        try:
            return await store.async_store.get(record.id)
        finally:
            await store.async_store.close()

    assert asyncio.run(use_async()) == record
    store.close()


def test_sync_sqlite_url_has_no_async_store(tmp_path: Path) -> None:
    store = SQLAlchemyStore(f"sqlite:///{tmp_path / 't.db'}")
    assert store.async_store is None  # PATAuth runs the sync store in threads
    store.close()


@pytest.mark.postgres
def test_store_from_url_builds_a_sqlalchemy_store(postgres_url: str, table: str) -> None:
    store = store_from_url(postgres_url, table_name=table, create_schema=True)
    try:
        assert isinstance(store, SQLAlchemyStore)
        assert store.engine is not None and store.engine.dialect.driver == "psycopg"
        record = make_record()
        store.insert(record)
        assert store.get(record.id) == record
    finally:
        assert isinstance(store, SQLAlchemyStore)
        store.drop_schema()
        store.close()


@pytest.mark.postgres
def test_lists_are_in_byte_order_of_ids_whatever_the_database_collation(postgres_url: str) -> None:
    """An ICU-collated database sorts "aaaab" before "BBBB"; the store sorts as the others do."""
    name = f"{urlsplit(postgres_url).path.lstrip('/')}_icu"
    admin = postgres_url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            f"CREATE DATABASE \"{name}\" LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8' TEMPLATE template0"
        )
    parts = urlsplit(postgres_url)
    url = urlunsplit(("postgresql+psycopg", parts.netloc, "/" + name, parts.query, parts.fragment))
    store = SQLAlchemyStore(url)
    try:
        store.create_schema()
        wanted = ["0aaaaaaaaaaa", "AAAAAAAAAAAA", "BBBBBBBBBBBB", "aaaaaaaaaaab"]  # byte order
        for token_id in reversed(wanted):
            store.insert(make_record(id=token_id, expires_at=T0 + timedelta(days=1)))
        assert [r.id for r in store.list_user("alice")] == wanted
        assert [r.id for r in store.list_expiring(T0, T0 + timedelta(days=2))] == wanted
    finally:
        store.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
