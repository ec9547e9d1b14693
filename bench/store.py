"""Store lookup latency with few vs many tokens, and cold-verification throughput.

Run: ``python bench/store.py`` (1k vs 1M tokens; ``--large 100000`` for a
quicker run). For each backend it fills one store with ``--small`` and one
with ``--large`` tokens (bulk: one transaction of ``executemany`` on SQLite,
``COPY`` on PostgreSQL; random base62 ids), then times ``store.get(id)`` on
random existing ids, interleaving small and large store in every round, and
prints µs per get (median of the rounds) and the large/small ratio. A lookup
is one primary-key index seek, so the ratio should stay near 1 (≤ 1.5).

Then it measures cold verifications (``store.get`` + ``Argon2Hasher().verify``)
per second against the large store, single-threaded and with 2 threads.

Backends: ``sqlite`` (the embedded SQLiteStore), ``sqlalchemy-sqlite``
(SQLAlchemyStore on a SQLite file), ``postgresql`` (SQLAlchemyStore, sync
and async). PostgreSQL runs in a database created for the run at
``--postgres-url`` (default ``$PAT_TEST_POSTGRES_URL`` or
postgresql://postgres@127.0.0.1:5432/test) and dropped afterwards; SQLite
files live in a temporary directory removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pat_middleware.core.hashing import Argon2Hasher
from pat_middleware.core.models import TokenRecord
from pat_middleware.core.tokens import BASE62, generate
from pat_middleware.stores._sqlite_codec import COLUMNS, token_row
from pat_middleware.stores.base import Store
from pat_middleware.stores.sqlalchemy import SQLAlchemyStore
from pat_middleware.stores.sqlite import SQLiteStore

NOW = datetime.now(UTC).replace(microsecond=0)
SCOPES = ("repo:read", "repo:write")
#: Tokens with known secrets in every store, for the cold-verification runs.
KNOWN = 32


@dataclass
class Filled:
    """A store holding ``size`` tokens; ``sample`` are ids known to exist."""

    label: str
    store: Store
    sample: list[str]
    get: Callable[[str], TokenRecord | None]
    size: int
    fill_seconds: float
    known: dict[str, str] = field(default_factory=dict)  # id -> secret


class Fixtures:
    """Everything every fill shares: filler hash and the tokens with known secrets."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        hasher = Argon2Hasher()
        self.filler_hash = hasher.hash("not-a-real-secret-0000000000000")
        self.known: dict[str, str] = {}
        self.known_hashes: dict[str, str] = {}
        for _ in range(KNOWN):
            _, parts = generate()
            self.known[parts.key_id] = parts.secret
            self.known_hashes[parts.key_id] = hasher.hash(parts.secret)

    def ids(self, n: int) -> list[str]:
        """``n`` distinct random 12-character base62 ids (not the known ones)."""
        out: set[str] = set()
        while len(out) < n:
            out.update("".join(self.rng.choices(BASE62, k=12)) for _ in range(n - len(out)))
        out.difference_update(self.known)
        return list(out) if len(out) == n else self.ids(n)

    def records(self, n: int) -> Iterator[TokenRecord]:
        """``n`` filler records (same argon2 hash) plus the known ones."""
        for i, token_id in enumerate(self.ids(n - KNOWN)):
            yield self._record(token_id, i, self.filler_hash)
        for j, (token_id, stored) in enumerate(self.known_hashes.items()):
            yield self._record(token_id, n + j, stored)

    @staticmethod
    def _record(token_id: str, i: int, stored: str) -> TokenRecord:
        return TokenRecord(
            id=token_id,
            user_id=f"user{i % 10_000}",
            name=f"token-{i}",
            hash=stored,
            scopes=SCOPES,
            description="benchmark token",
            created_at=NOW - timedelta(seconds=i),
            expires_at=NOW + timedelta(days=30),
        )


def _batches(records: Iterator[TokenRecord], size: int = 50_000) -> Iterator[list[TokenRecord]]:
    batch: list[TokenRecord] = []
    for record in records:
        batch.append(record)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _sample(ids: list[str], n: int, rng: random.Random) -> list[str]:
    return rng.sample(ids, min(n, len(ids)))


# -- fills ----------------------------------------------------------------------------------


def fill_sqlite(fx: Fixtures, directory: Path, size: int) -> Filled:
    path = directory / f"sqlite-{size}.db"
    store = SQLiteStore(path)
    store.get("warm-schema")  # creates the table
    start = time.perf_counter()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA cache_size = -524288")  # this fill connection only: random-order inserts
    ids: list[str] = []
    marks = ", ".join("?" * len(COLUMNS.split(",")))
    with conn:  # one transaction
        for batch in _batches(fx.records(size)):
            conn.executemany(f"INSERT INTO pat_tokens ({COLUMNS}) VALUES ({marks})", [token_row(r) for r in batch])
            ids.extend(r.id for r in batch)
    conn.execute("ANALYZE")
    conn.close()
    took = time.perf_counter() - start
    return Filled("sqlite", store, _sample(ids, 20_000, fx.rng), store.get, size, took, fx.known)


def fill_sqlalchemy_sqlite(fx: Fixtures, directory: Path, size: int) -> Filled:
    store = SQLAlchemyStore(f"sqlite:///{directory / f'sa-sqlite-{size}.db'}")
    return _fill_sqlalchemy("sqlalchemy-sqlite", store, fx, size)


def _fill_sqlalchemy(label: str, store: SQLAlchemyStore, fx: Fixtures, size: int) -> Filled:
    from sqlalchemy import insert

    assert store.engine is not None
    store.create_schema()
    ids: list[str] = []
    statements = store._ops.s  # the store's own row encoding
    start = time.perf_counter()
    sqlite = store.engine.dialect.name == "sqlite"
    with store.engine.begin() as conn:  # one transaction of executemany batches
        if sqlite:
            conn.exec_driver_sql("PRAGMA cache_size = -524288")  # for the fill...
        for batch in _batches(fx.records(size)):
            conn.execute(insert(store.table), [statements.row(r) for r in batch])
            ids.extend(r.id for r in batch)
        if sqlite:
            conn.exec_driver_sql("PRAGMA cache_size = -2000")  # ...then back to the default for the gets
    took = time.perf_counter() - start
    return Filled(label, store, _sample(ids, 20_000, fx.rng), store.get, size, took, fx.known)


def fill_postgresql(fx: Fixtures, url: str, size: int) -> Filled:
    import psycopg

    store = SQLAlchemyStore(url, table_name=f"pat_tokens_{size}")
    store.create_schema()
    ids: list[str] = []
    columns = [c.name for c in store.table.columns if c.name != "changed_at"]  # the feed's stamp stays NULL
    statements = store._ops.s
    start = time.perf_counter()
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
        with conn.cursor() as cur, cur.copy(f"COPY {store.table.name} ({', '.join(columns)}) FROM STDIN") as copy:
            for batch in _batches(fx.records(size)):
                for record in batch:
                    row = statements.row(record)
                    for key in ("scopes", "last_used_ips", "allowed_cidrs"):
                        row[key] = _json_text(row[key])
                    copy.write_row([row[c] for c in columns])
                ids.extend(r.id for r in batch)
        conn.commit()
        conn.autocommit = True
        conn.execute(f"VACUUM ANALYZE {store.table.name}")
    took = time.perf_counter() - start
    return Filled("postgresql", store, _sample(ids, 20_000, fx.rng), store.get, size, took, fx.known)


def _json_text(values: list[str]) -> str:
    import json

    return json.dumps(values)


@contextmanager
def postgres_database(base_url: str) -> Iterator[str]:
    """A database created for the run (SQLAlchemy psycopg URL); dropped afterwards."""
    import psycopg

    name = f"pat_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(base_url)
    try:
        yield urlunsplit(("postgresql+psycopg", parts.netloc, "/" + name, parts.query, ""))
    finally:
        with psycopg.connect(base_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- measurements -------------------------------------------------------------------------------


class AsyncRunner:
    """One event loop in a thread, so the async engine's connections stay on one loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def time_gets(filled: Filled, n: int, rng: random.Random) -> float:
    """µs per ``get`` over ``n`` random existing ids; every one must be found."""
    ids = rng.choices(filled.sample, k=n)
    get = filled.get
    start = time.perf_counter()
    for token_id in ids:
        if get(token_id) is None:
            raise AssertionError(f"{filled.label}: id {token_id} not found")
    return (time.perf_counter() - start) / n * 1e6


def async_getter(runner: AsyncRunner, store: SQLAlchemyStore) -> Callable[[str], TokenRecord | None]:
    async_store = store.async_store
    assert async_store is not None

    def get(token_id: str) -> TokenRecord | None:
        return runner.run(async_store.get(token_id))  # type: ignore[no-any-return]

    return get


def time_gets_async(runner: AsyncRunner, filled: Filled, n: int, rng: random.Random) -> float:
    """µs per ``await async_store.get`` measured inside the loop (no thread hop per call)."""
    store = filled.store
    assert isinstance(store, SQLAlchemyStore) and store.async_store is not None
    async_store = store.async_store
    ids = rng.choices(filled.sample, k=n)

    async def loop() -> float:
        start = time.perf_counter()
        for token_id in ids:
            if await async_store.get(token_id) is None:
                raise AssertionError(f"{filled.label} async: id {token_id} not found")
        return (time.perf_counter() - start) / n * 1e6

    return float(runner.run(loop()))


def _no_get(filled: Filled) -> Callable[[str], TokenRecord | None]:
    """A ``get`` that returns a known record from memory: argon2 alone, for reference."""
    records = {token_id: filled.get(token_id) for token_id in filled.known}
    return records.get


def cold_verifications_per_second(filled: Filled, threads: int, seconds: float) -> float:
    """store.get + argon2id verify of tokens with known secrets, for ``seconds``."""
    hasher = Argon2Hasher()
    known = list(filled.known.items())
    counts = [0] * threads
    deadline = time.perf_counter() + seconds

    def work(slot: int) -> None:
        rng = random.Random(slot)
        while time.perf_counter() < deadline:
            token_id, secret = rng.choice(known)
            record = filled.get(token_id)
            if record is None or not hasher.verify(record.hash, secret):
                raise AssertionError(f"{filled.label}: cold verification of {token_id} failed")
            counts[slot] += 1

    start = time.perf_counter()
    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=1_000, help="tokens in the small store")
    parser.add_argument("--large", type=int, default=1_000_000, help="tokens in the large store")
    parser.add_argument("--gets", type=int, default=2_000, help="gets per store per round")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--cold-seconds", type=float, default=2.0, help="duration of each cold run")
    parser.add_argument("--cold-rounds", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,sqlalchemy-sqlite,postgresql")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("PAT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.small <= KNOWN or args.large <= KNOWN:
        parser.error(f"--small and --large must exceed {KNOWN}")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - {"sqlite", "sqlalchemy-sqlite", "postgresql"}
    if unknown:
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")

    fx = Fixtures(args.seed)
    rng = random.Random(args.seed + 1)
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pat-bench-")))
        runner = AsyncRunner()
        stack.callback(runner.close)
        pairs: list[tuple[Filled, Filled]] = []
        async_pairs: list[tuple[Filled, Filled]] = []
        for backend in backends:
            if backend == "postgresql":
                url = stack.enter_context(postgres_database(args.postgres_url))
                pair = (fill_postgresql(fx, url, args.small), fill_postgresql(fx, url, args.large))
                async_pairs.append(pair)
            elif backend == "sqlite":
                pair = (fill_sqlite(fx, directory, args.small), fill_sqlite(fx, directory, args.large))
            else:
                pair = (
                    fill_sqlalchemy_sqlite(fx, directory, args.small),
                    fill_sqlalchemy_sqlite(fx, directory, args.large),
                )
            for filled in pair:
                stack.callback(filled.store.close)
                print(f"filled {filled.label:18} {filled.size:>9,} tokens in {filled.fill_seconds:6.1f} s")
            pairs.append(pair)
        for pair in async_pairs:
            for filled in pair:
                async_store = filled.store.async_store  # type: ignore[attr-defined]
                stack.callback(runner.run, async_store.close())  # on the loop that opened its connections

        # warm-up: touch every sampled id once, sync and async
        for small, large in pairs:
            for filled in (small, large):
                time_gets(filled, min(len(filled.sample), 5_000), rng)
        for small, large in async_pairs:
            for filled in (small, large):
                time_gets_async(runner, filled, 1_000, rng)

        samples: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.rounds):
            for small, large in pairs:
                for filled in (small, large) if rng.random() < 0.5 else (large, small):
                    samples.setdefault((filled.label, filled.size), []).append(time_gets(filled, args.gets, rng))
            for small, large in async_pairs:
                for filled in (small, large) if rng.random() < 0.5 else (large, small):
                    key = (filled.label + " (async)", filled.size)
                    samples.setdefault(key, []).append(time_gets_async(runner, filled, args.gets, rng))

        print()
        print(f"store.get latency, median of {args.rounds} rounds x {args.gets} gets on random existing ids")
        print(f"{'backend':26} {args.small:>10,} {args.large:>12,}   ratio")
        labels = [p[0].label for p in pairs] + [p[0].label + " (async)" for p in async_pairs]
        worst = 0.0
        for label in labels:
            small_us = statistics.median(samples[(label, args.small)])
            large_us = statistics.median(samples[(label, args.large)])
            worst = max(worst, large_us / small_us)
            print(f"{label:26} {small_us:8.1f}µs {large_us:10.1f}µs   {large_us / small_us:5.2f}")

        # Cold runs: interleaved rounds, median (argon2 timing on a shared VM is noisy).
        argon2_only = Filled("argon2 verify only", pairs[0][1].store, [], _no_get(pairs[0][1]), 0, 0.0, fx.known)
        cold_cases = [argon2_only] + [large for _, large in pairs]
        cold: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.cold_rounds):
            for filled in cold_cases:
                for threads in (1, 2):
                    rate = cold_verifications_per_second(filled, threads, args.cold_seconds)
                    cold.setdefault((filled.label, threads), []).append(rate)
        print()
        print(f"cold verifications per second (store.get + Argon2Hasher().verify), {args.large:,}-token store,")
        print(f"median of {args.cold_rounds} runs of {args.cold_seconds:g} s")
        print(f"{'backend':26} {'1 thread':>10} {'2 threads':>10}")
        for filled in cold_cases:
            one, two = (statistics.median(cold[(filled.label, n)]) for n in (1, 2))
            print(f"{filled.label:26} {one:10.1f} {two:10.1f}")
        print()
        print(f"worst large/small ratio: {worst:.2f} ({'ok' if worst <= 1.5 else 'ABOVE 1.5'})")


if __name__ == "__main__":
    main()
