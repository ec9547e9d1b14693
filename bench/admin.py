"""Administration pages over many tokens: ``store.search`` and ``store.read_log``.

Run: ``python bench/admin.py`` (1,000,000 tokens and log entries; ``--tokens
100000`` for a quicker run). It fills an embedded ``SQLiteStore`` (a file in a
temporary directory) and a PostgreSQL ``SQLAlchemyStore`` (in a database
created for the run at ``--postgres-url``, default ``$PAT_TEST_POSTGRES_URL``
or postgresql://postgres@127.0.0.1:5432/test, dropped afterwards) with the
same tokens and security-log entries, in bulk (``executemany`` in one
transaction on SQLite, ``COPY`` on PostgreSQL), then ``ANALYZE``.

The tokens have a realistic spread: a few heavy users and many light ones,
common and rare scopes, three years of creations, 30% never used, 25%
without expiry, 10% revoked and 1% rotated (in a grace period), names drawn
from a small vocabulary. Every timing is one page of 100 through the
store's public ``search`` (or ``read_log``), as the admin API asks it; each
figure is the median of ``--rounds`` rounds, the queries and stores
interleaved in every round, after one untimed round. It prints ms per page
for each store, then the PostgreSQL plan (``EXPLAIN ANALYZE``) of its
slowest query. The issue's target: a filtered page of 100 in at most 50 ms
on PostgreSQL. ``--pg-trgm`` installs the ``pg_trgm`` extension in the
database first, so ``pat db init`` gives ``name_contains`` a trigram index
(without it: statistics on ``lower(name)``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import string
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pat_middleware.core.audit import LogEntry, LogQuery, entry_id
from pat_middleware.core.models import TokenRecord
from pat_middleware.core.query import TokenQuery
from pat_middleware.stores._sqlite_codec import COLUMNS, LOG_COLUMNS, log_row, token_row
from pat_middleware.stores.sqlalchemy import SQLAlchemyStore
from pat_middleware.stores.sqlite import SQLiteStore

NOW = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)
PAGE = 100
ALPHABET = string.ascii_letters + string.digits
#: (scope, share of tokens holding it): two common, some middling, one rare.
SCOPES = (
    ("repo:read", 0.60),
    ("repo:write", 0.30),
    ("read:user", 0.20),
    ("packages:read", 0.10),
    ("admin:org", 0.02),
    ("audit:export", 0.001),
)
WORDS = ("deploy", "ci", "laptop", "backup", "terraform", "grafana", "release", "sync", "bot", "script")
KINDS = ("created", "renamed", "updated", "rotated", "revoked", "new_address", "throttled", "admin_action")
HEAVY_USER = "user-0"


def _user(rng: random.Random, users: int) -> str:
    """A user, skewed: a few users hold many tokens (``user-0`` the most)."""
    return f"user-{int(users * rng.random() ** 4)}"


def tokens(n: int, seed: int) -> Iterator[TokenRecord]:
    """``n`` records with the spread described in the module doc."""
    rng = random.Random(seed)
    users = max(n // 10, 10)
    for i in range(n):
        created = NOW - timedelta(seconds=rng.randrange(3 * 365 * 86400))
        age = (NOW - created).total_seconds()
        used = None if rng.random() < 0.3 else created + timedelta(seconds=age * rng.random() ** 0.3)
        expires = None if rng.random() < 0.25 else created + DAY * rng.choice((7, 30, 90, 365, 730))
        revoked = None
        draw = rng.random()
        if draw < 0.10:
            revoked = created + timedelta(seconds=age * rng.random())
        elif draw < 0.11:
            revoked = NOW + timedelta(hours=rng.randrange(1, 48))  # rotated, in its grace
        scopes = tuple(s for s, share in SCOPES if rng.random() < share) or ("repo:read",)
        token_id = "".join(rng.choices(ALPHABET, k=12))
        yield TokenRecord(
            id=token_id,
            user_id=_user(rng, users),
            name=f"{rng.choice(WORDS)}-{rng.choice(WORDS)}-{i}",  # unique: live names are, per user
            hash="$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$bm90LWEtcmVhbC1oYXNo",
            scopes=scopes,
            created_at=created,
            expires_at=expires,
            last_used_at=used,
            last_used_ips=("203.0.113.7",) if used else (),
            revoked_at=revoked,
            family_id=token_id,
        )


def log_entries(n: int, seed: int) -> Iterator[LogEntry]:
    """``n`` entries over the last 90 days, for the same skewed users."""
    rng = random.Random(seed + 1)
    users = max(n // 10, 10)
    for _ in range(n):
        at = NOW - timedelta(seconds=rng.randrange(90 * 86400))
        kind = rng.choice(KINDS)
        token_id = "".join(rng.choices(ALPHABET, k=12))
        actor = "admin:root" if kind == "admin_action" else None
        yield LogEntry(entry_id(at), at, kind, token_id, _user(rng, users), actor, "203.0.113.7", None, {"n": 1})


def _batches(items: Iterator[Any], size: int = 20_000) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# -- fills -----------------------------------------------------------------------------------


def fill_sqlite(path: Path, n_tokens: int, n_log: int, seed: int) -> tuple[SQLiteStore, float]:
    store = SQLiteStore(path)
    store.get("warm-schema")  # creates the tables and indexes
    start = time.perf_counter()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA cache_size = -524288")  # this fill connection only
    with conn:  # one transaction
        marks = ", ".join("?" * len(COLUMNS.split(",")))
        for batch in _batches(tokens(n_tokens, seed)):
            conn.executemany(f"INSERT INTO pat_tokens ({COLUMNS}) VALUES ({marks})", [token_row(r) for r in batch])
        marks = ", ".join("?" * len(LOG_COLUMNS.split(",")))
        for batch in _batches(log_entries(n_log, seed)):
            sql = f"INSERT OR IGNORE INTO pat_tokens_log ({LOG_COLUMNS}) VALUES ({marks})"
            conn.executemany(sql, [log_row(e) for e in batch])
    conn.execute("ANALYZE")
    conn.close()
    return store, time.perf_counter() - start


def fill_postgresql(
    url: str, n_tokens: int, n_log: int, seed: int, trigrams: bool = False
) -> tuple[SQLAlchemyStore, float]:
    import psycopg

    if trigrams:  # before create_schema, which then adds the trigram index on lower(name)
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    store = SQLAlchemyStore(url)
    store.create_schema()
    statements = store._ops.s  # the store's own row encoding
    table = store.table.name
    columns = [c.name for c in store.table.columns if c.name != "changed_at"]
    log_columns = [c.name for c in statements.log.columns]
    start = time.perf_counter()
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
        with conn.cursor() as cur:
            with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for batch in _batches(tokens(n_tokens, seed)):
                    for record in batch:
                        row = statements.row(record)
                        for key in ("scopes", "last_used_ips", "allowed_cidrs", "resources"):
                            row[key] = None if row[key] is None else json.dumps(row[key])
                        copy.write_row([row[c] for c in columns])
            with cur.copy(f"COPY {table}_log ({', '.join(log_columns)}) FROM STDIN") as copy:
                for batch in _batches(log_entries(n_log, seed)):
                    for entry in batch:
                        row = statements.log_row(entry)
                        row["details"] = json.dumps(row["details"])
                        copy.write_row([row[c] for c in log_columns])
        conn.commit()
        conn.autocommit = True
        conn.execute(f"VACUUM ANALYZE {table}")
        conn.execute(f"VACUUM ANALYZE {table}_log")
    return store, time.perf_counter() - start


@contextmanager
def postgres_database(base_url: str) -> Iterator[str]:
    """A database created for the run (SQLAlchemy psycopg URL); dropped afterwards."""
    import psycopg

    name = f"pat_bench_admin_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(base_url)
    try:
        yield urlunsplit(("postgresql+psycopg", parts.netloc, "/" + name, parts.query, ""))
    finally:
        with psycopg.connect(base_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- the pages -------------------------------------------------------------------------------


def pages() -> dict[str, TokenQuery | LogQuery]:
    """Each admin page timed: a label and the question as the admin API asks it."""
    midpoint = NOW - DAY * 365 * 1.5
    return {
        "active, newest first": TokenQuery(now=NOW, state="active", sort="-created_at", limit=PAGE),
        "scope repo:read (60%), active": TokenQuery(now=NOW, state="active", scopes_any=("repo:read",), limit=PAGE),
        "scope audit:export (0.1%)": TokenQuery(now=NOW, scopes_any=("audit:export",), limit=PAGE),
        "scope admin:org|audit:export": TokenQuery(now=NOW, scopes_any=("admin:org", "audit:export"), limit=PAGE),
        f"user_id {HEAVY_USER}": TokenQuery(now=NOW, user_id=HEAVY_USER, limit=PAGE),
        "user_id (a light user)": TokenQuery(now=NOW, user_id="user-77777", limit=PAGE),
        "unused 90 d, active, by last use": TokenQuery(
            now=NOW, state="active", unused_since=NOW - 90 * DAY, sort="last_used_at", limit=PAGE
        ),
        "inactive (policy 90 d)": TokenQuery(now=NOW, state="inactive", unused_after=90 * DAY, limit=PAGE),
        "name contains 'terraform'": TokenQuery(now=NOW, name_contains="terraform", limit=PAGE),
        "name contains 'form-bot-12'": TokenQuery(now=NOW, name_contains="form-bot-12", limit=PAGE),
        "expires within 7 d, active": TokenQuery(now=NOW, state="active", expires_before=NOW + 7 * DAY, limit=PAGE),
        "deep page (cursor mid-listing)": TokenQuery(now=NOW, after=(midpoint, "~"), limit=PAGE),
        "deep page by last use, active": TokenQuery(
            now=NOW, state="active", sort="-last_used_at", after=(midpoint, "~"), limit=PAGE
        ),
        f"log: {HEAVY_USER}, newest first": LogQuery(user_id=HEAVY_USER, limit=PAGE),
        "log: all, newest first": LogQuery(limit=PAGE),
        "log: revoked|admin_action, 7 d": LogQuery(kinds=("revoked", "admin_action"), since=NOW - 7 * DAY, limit=PAGE),
    }


def ask(store: Any, question: TokenQuery | LogQuery) -> int:
    """One page through the public store method; the number of rows."""
    if isinstance(question, TokenQuery):
        return len(store.search(question))
    return len(store.read_log(question))


def measure(stores: dict[str, Any], questions: dict[str, TokenQuery | LogQuery], rounds: int) -> dict[Any, Any]:
    """Median ms per page for every (store, question), rounds interleaved."""
    times: dict[tuple[str, str], list[float]] = {(s, q): [] for s in stores for q in questions}
    rows: dict[tuple[str, str], int] = {}
    for n in range(rounds + 1):
        for label, question in questions.items():
            for name, store in stores.items():
                start = time.perf_counter()
                rows[(name, label)] = ask(store, question)
                took = (time.perf_counter() - start) * 1000
                if n:  # the first round warms caches
                    times[(name, label)].append(took)
    return {key: (statistics.median(values), rows[key]) for key, values in times.items()}


def explain_postgresql(store: SQLAlchemyStore, question: TokenQuery | LogQuery) -> str:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of the SQL the store runs for ``question``."""
    statements = store._ops.s
    statement = statements.search(question) if isinstance(question, TokenQuery) else statements.read_log(question)
    assert store.engine is not None
    with store.engine.connect() as conn:
        compiled = statement.compile(dialect=conn.dialect)
        params = {k: v for k, v in compiled.params.items()}
        plan = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {compiled.string}", params).fetchall()
    return "\n".join(row[0] for row in plan)


def explain_sqlite(path: Path, store: SQLiteStore, question: TokenQuery | LogQuery) -> str:
    """SQLite's ``EXPLAIN QUERY PLAN`` of the store's SQL for ``question``."""
    from pat_middleware.stores._sql_query import SQLITE, log_sql, search_sql
    from pat_middleware.stores._sqlite_codec import micros

    if isinstance(question, TokenQuery):
        clause = search_sql(question, SQLITE, micros)
        sql = f"SELECT {COLUMNS} FROM pat_tokens WHERE {clause.where} ORDER BY {clause.order} LIMIT :limit"
    else:
        clause = log_sql(question, micros)
        sql = f"SELECT {LOG_COLUMNS} FROM pat_tokens_log WHERE {clause.where} ORDER BY {clause.order} LIMIT :limit"
    with sqlite3.connect(path) as conn:
        rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}", {**clause.params, "limit": question.limit}).fetchall()
    return "\n".join(row[-1] for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1_000_000, help="tokens in each store")
    parser.add_argument("--log", type=int, default=None, help="security-log entries (default: as many as tokens)")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (median reported); at least 5")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("PAT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--explain-sqlite", action="store_true", help="also print SQLite's plan of its slowest")
    parser.add_argument(
        "--pg-trgm", action="store_true", help="install pg_trgm first (name_contains gets a trigram index)"
    )
    args = parser.parse_args()
    n_log = args.tokens if args.log is None else args.log
    backends = args.backends.split(",")
    questions = pages()
    print(f"{args.tokens:,} tokens, {n_log:,} log entries; page of {PAGE}; median of {args.rounds} rounds")

    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pat-bench-admin-")))
        stores: dict[str, Any] = {}
        fills: dict[str, Callable[[], tuple[Any, float]]] = {
            "sqlite": lambda: fill_sqlite(directory / "tokens.db", args.tokens, n_log, args.seed),
            "postgresql": lambda: fill_postgresql(
                stack.enter_context(postgres_database(args.postgres_url)), args.tokens, n_log, args.seed, args.pg_trgm
            ),
        }
        for name in backends:
            store, took = fills[name]()
            stack.callback(store.close)
            stores[name] = store
            print(f"filled {name}: {took:.1f} s")

        results = measure(stores, questions, args.rounds)
        width = max(len(label) for label in questions)
        header = "".join(f"{name:>14}" for name in stores)
        print(f"\n{'ms per page of 100':<{width}}{header}   rows")
        for label in questions:
            cells = "".join(f"{results[(name, label)][0]:>14.2f}" for name in stores)
            print(f"{label:<{width}}{cells}   {results[(next(iter(stores)), label)][1]}")
        for name, store in stores.items():
            slowest = max(questions, key=lambda label: results[(name, label)][0])
            print(f"\nslowest on {name}: {slowest} ({results[(name, slowest)][0]:.2f} ms)")
            if name == "postgresql":
                print(explain_postgresql(store, questions[slowest]))
            elif args.explain_sqlite:
                print(explain_sqlite(directory / "tokens.db", store, questions[slowest]))


if __name__ == "__main__":
    main()
