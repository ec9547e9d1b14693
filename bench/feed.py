"""Store reads per second per process, with and without the revocation feed.

Run: ``python bench/feed.py`` (SQLite file store in a temporary directory;
``--postgres URL`` adds a PostgreSQL run on a throwaway table).

Traffic: ``--tokens`` active tokens (1,000 and 10,000 by default), each used
once a second, for ``--seconds`` simulated seconds (60), by one process with
no Redis. Time is a simulated clock, so a minute of traffic takes a few real
seconds; every store call is real and counted:

* **before** (``revocation_poll=None``): a worker trusts a cached entry
  ``local_ttl`` (5 s), then re-reads the record: ``tokens / local_ttl``
  reads a second;
* **after** (the feed, ``revocation_poll=5``): one ``changes_since`` query
  every 5 s, whatever the number of tokens; no per-token re-reads.

Also printed: the wall time of one ``changes_since`` query against the
real store, with the given number of tokens and ten recent changes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pat_middleware import HMACHasher, PATAuth, store_from_url
from pat_middleware.core.models import TokenRecord
from pat_middleware.core.tokens import generate


class Clock:
    """Simulated epoch seconds (starting now: the stores stamp changes with the real clock)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Counted:
    """Counts the calls made to a store's ``get`` and ``changes_since``."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.reads = 0
        self.polls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def get(self, token_id: str) -> TokenRecord | None:
        self.reads += 1
        return self.store.get(token_id)  # type: ignore[no-any-return]

    def changes_since(self, since: datetime) -> list[tuple[str, datetime]]:
        self.polls += 1
        return self.store.changes_since(since)  # type: ignore[no-any-return]

    def close(self) -> None:
        """The store outlives one simulation (``run`` closes it)."""


def fill(store: Any, hasher: HMACHasher, count: int) -> list[str]:
    """``count`` tokens written straight to the store (an HMAC hasher: the subject is reads)."""
    tokens = []
    now = datetime.now(UTC)
    for i in range(count):
        plaintext, parts = generate("pat")
        store.insert(
            TokenRecord(
                id=parts.key_id,
                user_id=f"user{i % 100}",
                name=f"t{i}",
                hash=hasher.hash(parts.secret),
                scopes=("repo:read",),
                created_at=now,
                expires_at=now + timedelta(days=30),
            )
        )
        tokens.append(plaintext)
    return tokens


def simulate(store: Any, hasher: HMACHasher, tokens: list[str], seconds: int, poll: float | None) -> tuple[float, int]:
    """Store calls per simulated second (reads + feed queries), and the feed queries made."""
    counted, clock = Counted(store), Clock()
    auth = PATAuth(counted, hasher=hasher, clock=clock, revocation_poll=poll)  # type: ignore[arg-type]
    try:
        for token in tokens:  # warm: every token verified once
            auth.verify(token)
        if auth.feed is not None:
            auth.feed.stop()  # the simulation polls on its own clock, not the thread's
            auth.feed.poll_once()
        counted.reads = counted.polls = 0
        next_poll = clock.now + (poll or 0)
        for _ in range(seconds):
            clock.now += 1.0
            if poll is not None and clock.now >= next_poll:
                auth.feed.poll_once()  # type: ignore[union-attr]
                next_poll += poll
            for token in tokens:
                auth.verify(token)
        return (counted.reads + counted.polls) / seconds, counted.polls
    finally:
        auth.close()


def query_time(store: Any, tokens: list[str], rounds: int = 50) -> float:
    """Median wall time of one ``changes_since`` (ten recent changes among all tokens)."""
    for token in tokens[:10]:
        store.update(token[4:16], {"name": f"renamed-{uuid.uuid4().hex[:6]}"})
    since = datetime.now(UTC) - timedelta(seconds=35)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        found = store.changes_since(since)
        times.append(time.perf_counter() - started)
    assert len(found) >= 10, found
    return statistics.median(times)


def run(
    label: str,
    make_store: Callable[[], Any],
    counts: list[int],
    seconds: int,
    cleanup: Callable[[Any], None] = lambda store: store.close(),
    prepare: Callable[[Any], None] = lambda store: None,
) -> None:
    hasher = HMACHasher(b"bench-key-" * 4)
    print(f"\n{label}: store calls per second per process, each token used once a second, no Redis")
    print(f"{'tokens':>8} {'before (local_ttl 5 s)':>24} {'after (feed, 5 s)':>20} {'feed query':>12}")
    for count in counts:
        store = make_store()
        try:
            tokens = fill(store, hasher, count)
            before, _ = simulate(store, hasher, tokens, seconds, None)
            after, polls = simulate(store, hasher, tokens, seconds, 5.0)
            prepare(store)
            query = query_time(store, tokens)
            print(f"{count:>8} {before:>22.1f}/s {after:>18.2f}/s {query * 1e3:>9.2f} ms  ({polls} queries)")
        finally:
            cleanup(store)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--postgres", help="also run on this PostgreSQL URL (a throwaway table)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = iter(range(1_000_000))
        run(
            "SQLite",
            lambda: store_from_url(f"sqlite:///{Path(tmp) / f'feed{next(files)}.db'}"),
            args.tokens,
            args.seconds,
        )
    if args.postgres:
        from pat_middleware import SQLAlchemyStore

        tables: dict[int, str] = {}

        def postgres() -> Any:
            url = args.postgres.replace("postgresql://", "postgresql+psycopg://", 1)
            table = f"bench_feed_{uuid.uuid4().hex[:8]}"
            store = SQLAlchemyStore(url, table_name=table, create_schema=True)
            tables[id(store)] = table
            return store

        def analyze(store: Any) -> None:  # as autovacuum does to a live table: the planner then uses the index
            import psycopg

            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(f"ANALYZE {tables[id(store)]}")

        def drop(store: Any) -> None:  # a throwaway table
            store.drop_schema()
            store.close()

        run("PostgreSQL", postgres, args.tokens, args.seconds, drop, analyze)


if __name__ == "__main__":
    main()
