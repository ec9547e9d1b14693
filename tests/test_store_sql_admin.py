"""The SQL stores answer administration pages along their indexes.

The plans checked are those of the very SQL each store runs (captured as it
runs): PostgreSQL's ``EXPLAIN`` on tens of thousands of analysed rows, SQLite's
``EXPLAIN QUERY PLAN`` on an analysed table. The store contract checks the
answers; these check that a page of 100 does not read the whole table.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from sqlalchemy import event

from pat_middleware.core.audit import LogEntry, LogQuery, entry_id
from pat_middleware.core.models import TokenRecord
from pat_middleware.core.query import TokenQuery
from pat_middleware.stores import SQLiteStore
from pat_middleware.stores._sqlite_codec import COLUMNS, LOG_COLUMNS, log_row, token_row
from pat_middleware.stores._sqlite_pool import Lease
from pat_middleware.stores.sqlalchemy import SQLAlchemyStore

NOW = datetime.now(UTC)
DAY = timedelta(days=1)
ROWS = 40_000

#: ROWS tokens in one statement: a token a minute, three in four used, one in ten
#: revoked, one in 500 holding a rare scope, 2000 users.
_PG_TOKENS = """
INSERT INTO "{t}" (id, user_id, name, description, scopes, hash, created_at, expires_at,
                   last_used_at, last_used_ips, revoked_at, family_id, allowed_cidrs)
SELECT lpad(g::text, 12, '0'), 'user-' || mod(g, 2000), 'token-' || g, '',
       CAST(CASE WHEN mod(g, 500) = 0 THEN '["audit:export"]' ELSE '["repo:read"]' END AS json), 'h',
       now() - g * interval '1 minute',
       CASE WHEN mod(g, 4) <> 0 THEN now() + (mod(g, 400) - 100) * interval '1 day' END,
       CASE WHEN mod(g, 4) <> 0 THEN now() - mod(g, 5000) * interval '1 hour' END,
       CAST('[]' AS json), CASE WHEN mod(g, 10) = 0 THEN now() - interval '1 day' END,
       lpad(g::text, 12, '0'), CAST('[]' AS json)
FROM generate_series(1, {n}) AS g
"""
_PG_LOG = """
INSERT INTO "{t}_log" (id, at, kind, token_id, user_id, details)
SELECT lpad(to_hex(g), 22, '0'), now() - g * interval '1 second', 'created',
       lpad(mod(g, {n})::text, 12, '0'), 'user-' || mod(g, 2000), CAST('{{}}' AS json)
FROM generate_series(1, {n}) AS g
"""


def _filled_pg(url: str) -> SQLAlchemyStore:
    """A PostgreSQL store (schema by ``create_schema``) holding ROWS tokens and ROWS
    log entries, analysed."""
    table = f"pat_admin_{uuid.uuid4().hex[:8]}"
    store = SQLAlchemyStore(url, table_name=table)
    store.create_schema()
    assert store.engine is not None
    with store.engine.begin() as conn:
        conn.exec_driver_sql(_PG_TOKENS.format(t=table, n=ROWS))
        conn.exec_driver_sql(_PG_LOG.format(t=table, n=ROWS))
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f'ANALYZE "{table}"')
        conn.exec_driver_sql(f'ANALYZE "{table}_log"')
    return store


@pytest.fixture(scope="module")
def big_pg(postgres_url: str) -> Iterator[SQLAlchemyStore]:
    """The filled store in the session database (no pg_trgm there)."""
    store = _filled_pg(postgres_url.replace("postgresql://", "postgresql+psycopg://", 1))
    yield store
    store.drop_schema()
    store.close()


@pytest.fixture(scope="module")
def big_pg_trigrams(postgres_url: str) -> Iterator[SQLAlchemyStore]:
    """The filled store in a database of its own where pg_trgm is installed."""
    name = f"pat_trgm_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with psycopg.connect(urlunsplit((parts.scheme, parts.netloc, "/" + name, "", "")), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_trgm")
        store = _filled_pg(urlunsplit(("postgresql+psycopg", parts.netloc, "/" + name, "", "")))
        yield store
        store.close()
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_plan(store: SQLAlchemyStore, call: Callable[[], Any], table_suffix: str = "") -> str:
    """``EXPLAIN`` of the last statement ``call`` ran on ``store``'s table (plus suffix)."""
    assert store.engine is not None
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", capture)
    try:
        call()
    finally:
        event.remove(store.engine, "before_cursor_execute", capture)
    target = f"{store.table.name}{table_suffix} "
    statement, parameters = [s for s in seen if target in s[0] or f'"{target.strip()}"' in s[0]][-1]
    with store.engine.connect() as conn:
        return "\n".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN {statement}", parameters))


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("criteria", "index"),
    [
        ({"state": "active", "sort": "-created_at"}, "created"),
        ({"sort": "created_at", "after": (NOW - 200 * DAY, "000000020000")}, "created"),
        ({"unused_since": NOW - 90 * DAY, "sort": "last_used_at"}, "activity"),
        ({"state": "active", "sort": "-last_used_at", "after": (NOW - 30 * DAY, "~")}, "activity"),
        ({"state": "inactive", "unused_after": 90 * DAY, "sort": "last_used_at"}, "activity"),
    ],
    ids=["active-newest", "cursor-oldest", "unused-since", "cursor-by-use", "inactive"],
)
def test_postgres_pages_are_index_scans(big_pg: SQLAlchemyStore, criteria: dict[str, Any], index: str) -> None:
    query = TokenQuery(now=NOW, limit=100, **criteria)
    assert len(big_pg.search(query)) == 100
    plan = _pg_plan(big_pg, lambda: big_pg.search(query))
    assert "Index Scan" in plan and f"ix_{big_pg.table.name}_{index}" in plan, plan
    assert "Seq Scan" not in plan and "Sort" not in plan.split("Index")[0], plan  # no sort above the scan


@pytest.mark.postgres
def test_postgres_rare_scope_uses_the_gin_index(big_pg: SQLAlchemyStore) -> None:
    query = TokenQuery(now=NOW, scopes_any=("audit:export", "no:such"), limit=100)
    assert len(big_pg.search(query)) == ROWS // 500
    plan = _pg_plan(big_pg, lambda: big_pg.search(query))
    assert f"Bitmap Index Scan on ix_{big_pg.table.name}_scopes" in plan and "Seq Scan" not in plan, plan


@pytest.mark.postgres
def test_postgres_knows_how_common_a_name_substring_is(big_pg: SQLAlchemyStore) -> None:
    """Statistics on lower(name) (no pg_trgm): a common substring pages along the
    created_at index instead of reading the table."""
    assert big_pg.engine is not None
    with big_pg.engine.connect() as conn:
        found = conn.exec_driver_sql("SELECT stxname FROM pg_statistic_ext").scalars().all()
    assert f"st_{big_pg.table.name}_name" in found
    query = TokenQuery(now=NOW, name_contains="TOKEN-3", limit=100)  # about one name in nine
    assert len(big_pg.search(query)) == 100
    plan = _pg_plan(big_pg, lambda: big_pg.search(query))
    assert f"Index Scan Backward using ix_{big_pg.table.name}_created" in plan and "Seq Scan" not in plan, plan


@pytest.mark.postgres
def test_postgres_rare_name_substring_uses_trigrams_where_installed(big_pg_trigrams: SQLAlchemyStore) -> None:
    store = big_pg_trigrams
    rare = TokenQuery(now=NOW, name_contains="n-3999", limit=100)  # token-3999 and token-39990..39999
    assert sorted(r.name for r in store.search(rare)) == sorted(["token-3999"] + [f"token-3999{d}" for d in range(10)])
    plan = _pg_plan(store, lambda: store.search(rare))
    assert f"Bitmap Index Scan on ix_{store.table.name}_name" in plan and "Seq Scan" not in plan, plan
    common = TokenQuery(now=NOW, name_contains="token-3", limit=100)
    plan = _pg_plan(store, lambda: store.search(common))
    assert f"Index Scan Backward using ix_{store.table.name}_created" in plan, plan
    wildcard = TokenQuery(now=NOW, name_contains="n_3999", limit=100)  # "_" is a character here
    assert store.search(wildcard) == []


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("query", "index"),
    [(LogQuery(user_id="user-7"), "log_user"), (LogQuery(token_id="000000000042"), "log_token")],
    ids=["by-user", "by-token"],
)
def test_postgres_log_pages_are_index_scans(big_pg: SQLAlchemyStore, query: LogQuery, index: str) -> None:
    assert big_pg.read_log(query)
    plan = _pg_plan(big_pg, lambda: big_pg.read_log(query), "_log")
    assert f"ix_{big_pg.table.name}_{index}" in plan and "Seq Scan" not in plan, plan


@pytest.mark.postgres
def test_postgres_prune_finds_old_entries_by_date(big_pg: SQLAlchemyStore) -> None:
    plan = _pg_plan(big_pg, lambda: big_pg.prune_log(NOW - 3650 * DAY), "_log")  # deletes nothing
    assert f"ix_{big_pg.table.name}_log_at" in plan and "Seq Scan" not in plan, plan


# -- SQLite ---------------------------------------------------------------------------------


def _tokens(n: int) -> Iterator[TokenRecord]:
    for g in range(1, n + 1):
        token_id = f"{g:012d}"
        yield TokenRecord(
            id=token_id,
            user_id=f"user-{g % 200}",
            name=f"token-{g}",
            hash="h",
            scopes=("audit:export",) if g % 500 == 0 else ("repo:read",),
            created_at=NOW - g * timedelta(minutes=1),
            expires_at=NOW + (g % 400 - 100) * DAY if g % 4 else None,
            last_used_at=NOW - (g % 5000) * timedelta(hours=1) if g % 4 else None,
            revoked_at=NOW - DAY if g % 10 == 0 else None,
            family_id=token_id,
        )


@pytest.fixture(scope="module")
def big_sqlite() -> Iterator[SQLiteStore]:
    """A ``:memory:`` SQLiteStore (one connection) with 5000 tokens and log entries, analysed."""
    store = SQLiteStore(":memory:", table="tok")
    entries = [LogEntry(entry_id(NOW - g * timedelta(seconds=1)), NOW, "created", f"{g % 300:012d}", f"user-{g % 200}")
               for g in range(5000)]  # fmt: skip
    with Lease(store._pool) as conn:
        conn.executemany(f"INSERT INTO tok ({COLUMNS}) VALUES ({', '.join('?' * 15)})", map(token_row, _tokens(5000)))
        conn.executemany(f"INSERT INTO tok_log ({LOG_COLUMNS}) VALUES ({', '.join('?' * 9)})", map(log_row, entries))
        conn.execute("ANALYZE")
    yield store
    store.close()


def _sqlite_plan(store: SQLiteStore, call: Callable[[], Any]) -> str:
    """``EXPLAIN QUERY PLAN`` of the last statement ``call`` ran (its parameters expanded)."""
    seen: list[str] = []
    with Lease(store._pool) as conn:  # :memory: has one connection: the store's own
        conn.set_trace_callback(seen.append)
    try:
        call()
    finally:
        with Lease(store._pool) as conn:
            conn.set_trace_callback(None)
            return "\n".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {seen[-1]}"))


@pytest.mark.parametrize(
    ("question", "index"),
    [
        (TokenQuery(now=NOW, state="active", sort="-created_at"), "tok_created"),
        (TokenQuery(now=NOW, sort="created_at", after=(NOW - 20 * DAY, "000000002000")), "tok_created"),
        (TokenQuery(now=NOW, unused_since=NOW - 90 * DAY, sort="last_used_at"), "tok_activity"),
        (TokenQuery(now=NOW, state="active", sort="-last_used_at", after=(NOW - 30 * DAY, "~")), "tok_activity"),
        (TokenQuery(now=NOW, user_id="user-7"), "tok_user"),
        (LogQuery(user_id="user-7"), "tok_log_user"),
        (LogQuery(token_id="000000000042"), "tok_log_token"),
    ],
    ids=["active-newest", "cursor-oldest", "unused-since", "cursor-by-use", "user", "log-user", "log-token"],
)
def test_sqlite_pages_follow_an_index(big_sqlite: SQLiteStore, question: TokenQuery | LogQuery, index: str) -> None:
    if isinstance(question, TokenQuery):
        call: Callable[[], Any] = lambda: big_sqlite.search(question)  # noqa: E731
    else:
        call = lambda: big_sqlite.read_log(question)  # noqa: E731
    assert call()
    plan = _sqlite_plan(big_sqlite, call)
    assert f"INDEX {index} " in plan + " " and "TEMP B-TREE" not in plan, plan
