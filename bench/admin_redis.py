"""RedisStore administration: a page of search and of the security log over a large store.

Run: ``python bench/admin_redis.py`` (100,000 tokens and 100,000 log entries;
``--tokens``/``--entries`` to change). Fills a throwaway key prefix on the
Redis at ``--redis-url`` (default ``$PAT_TEST_REDIS_URL`` or
redis://127.0.0.1:6379/0) through the store's own insert and append scripts
(pipelined), times each case ``--rounds`` times and prints the median in
milliseconds, with the records (or entries) the case read to fill its page
where that is what it costs. Deletes its keys afterwards.

Tokens: created over the last year, a third of them used, one in a hundred
holding ``admin:org``, a thousand owners. Search cases: the first page
(``-created_at``, 101 records as ``manager.search`` asks), a page from a
cursor half-way, the first page by activity, a filter one token in a hundred
matches, a filter nothing matches (the whole store is read), and the sweep's
query (active, unused for 90 days, pages of 1000 by creation).
"""

from __future__ import annotations

import os
import sys

# bench/redis.py would shadow the redis package: drop this directory from the path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402

from pat_middleware.core.audit import LogEntry, LogQuery, entry_id  # noqa: E402
from pat_middleware.core.models import TokenRecord  # noqa: E402
from pat_middleware.core.query import TokenQuery  # noqa: E402
from pat_middleware.redis.executor import Plan  # noqa: E402
from pat_middleware.stores.redis import RedisStore  # noqa: E402

NOW = datetime.now(UTC)
KINDS = ("created", "renamed", "revoked", "new_address", "rotated")


def tokens(count: int, rng: random.Random) -> list[TokenRecord]:
    """``count`` records spread over the last year."""
    records = []
    for n in range(count):
        created = NOW - timedelta(seconds=rng.randrange(365 * 86400))
        used = created + timedelta(seconds=rng.randrange(int((NOW - created).total_seconds()) + 1))
        records.append(
            TokenRecord(
                id=f"B{n:011d}",
                user_id=f"user{n % 1000}",
                name=f"token {n}",
                hash=f"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${n:022d}",
                scopes=("admin:org",) if n % 100 == 0 else ("repo:read",),
                created_at=created,
                last_used_at=used if n % 3 == 0 else None,
                expires_at=created + timedelta(days=400) if n % 2 else None,
                revoked_at=created + timedelta(days=1) if n % 10 == 0 else None,
            )
        )
    return records


def fill(store: RedisStore, plans: list[Plan[Any]]) -> float:
    """Send the plans' commands pipelined, 1000 a round trip; seconds taken."""
    started = time.perf_counter()
    for i in range(0, len(plans), 1000):
        chunk = plans[i : i + 1000]
        commands = tuple(c for plan in chunk for c in plan.commands)
        scripts = tuple({s.sha: s for plan in chunk for s in plan.scripts}.values())
        store.executor.run(Plan(commands, lambda replies: None, scripts))
    return time.perf_counter() - started


def timed(rounds: int, call: Callable[[], Any]) -> tuple[float, Any]:
    """Median milliseconds of ``rounds`` calls, and the last result."""
    times, result = [], None
    for _ in range(rounds):
        started = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def sweep(store: RedisStore) -> list[TokenRecord]:
    """The sweep's query, page after page (what ``manager.sweep`` sends)."""
    query = TokenQuery(now=NOW, state="active", unused_since=NOW - timedelta(days=90), sort="created_at", limit=1000)
    found: list[TokenRecord] = []
    while True:
        page = store.search(query)
        found += page
        if len(page) < 1000:
            return found
        query = TokenQuery(**{**_fields(query), "after": (page[-1].created_at, page[-1].id)})


def _fields(query: TokenQuery) -> dict[str, Any]:
    return {name: getattr(query, name) for name in query.__dataclass_fields__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", default=os.environ.get("PAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    prefix = f"pat-bench:admin:{uuid.uuid4().hex[:8]}:"
    store = RedisStore.from_url(args.redis_url, prefix=prefix, socket_timeout=30.0)
    rng = random.Random(15)
    try:
        records = tokens(args.tokens, rng)
        seconds = fill(store, [store.plans.insert(r) for r in records])
        print(f"filled {len(records):,} tokens in {seconds:.1f} s")
        ms, _ = timed(1, lambda: store.search(TokenQuery(now=NOW, limit=1)))
        print(f"first search (builds the indexes with SCAN): {ms:.0f} ms")
        middle = sorted(records, key=lambda r: (r.created_at, r.id), reverse=True)[len(records) // 2]
        cases = {
            "first page, -created_at": TokenQuery(now=NOW, limit=101),
            "page from a cursor half-way": TokenQuery(now=NOW, limit=101, after=(middle.created_at, middle.id)),
            "first page, -last_used_at": TokenQuery(now=NOW, sort="-last_used_at", limit=101),
            "scope admin:org (1 in 100)": TokenQuery(now=NOW, scopes_any=("admin:org",), limit=101),
            "one owner's tokens": TokenQuery(now=NOW, user_id="user7", limit=101),
            "nothing matches (reads all)": TokenQuery(now=NOW, name_contains="no such name", limit=101),
        }
        print(f"\nsearch over {len(records):,} tokens (median of {args.rounds}):")
        for label, query in cases.items():
            ms, page = timed(args.rounds, lambda q=query: store.search(q))
            print(f"  {label:32} {ms:8.1f} ms  ({len(page)} records)")
        ms, found = timed(max(1, args.rounds // 3), lambda: sweep(store))
        print(f"  {'sweep query, every page':32} {ms:8.1f} ms  ({len(found)} records)")

        entries = []
        for n in range(args.entries):
            at = NOW - timedelta(seconds=args.entries - n, microseconds=rng.randrange(1000))
            user = f"user{n % 1000}"
            entries.append(LogEntry(entry_id(at), at, KINDS[n % 5], f"B{n % 5000:011d}", user, details={"n": n}))
        late = entries[:]
        for i in range(0, len(late) - 600, 500):  # each batch overlaps the next: late entries
            late[i + 400 : i + 600] = late[i + 500 : i + 600] + late[i + 400 : i + 500]
        batches = [store.plans.append_log(late[i : i + 500]) for i in range(0, len(late), 500)]
        seconds = fill(store, batches)
        print(f"\nappended {len(entries):,} log entries in batches of 500, a fifth of each late: {seconds:.1f} s")
        log_cases = {
            "newest page": LogQuery(limit=101),
            "one owner's page": LogQuery(user_id="user7", limit=101),
            "one token's page": LogQuery(token_id="B00000000042", limit=101),
            "kind revoked (1 in 5)": LogQuery(kinds=("revoked",), limit=101),
            "page from a cursor half-way": LogQuery(before=entries[len(entries) // 2].id, limit=101),
        }
        for label, log_query in log_cases.items():
            ms, page = timed(args.rounds, lambda q=log_query: store.read_log(q))
            print(f"  {label:32} {ms:8.1f} ms  ({len(page)} entries)")
        cutoff = entries[len(entries) // 10].at
        ms, deleted = timed(1, lambda: store.prune_log(cutoff))
        print(f"  {'prune_log, oldest 10%':32} {ms:8.1f} ms  ({deleted} entries)")
    finally:
        client = store.clients.sync
        keys = list(client.scan_iter(match=prefix + "*", count=5000))
        for i in range(0, len(keys), 1000):
            client.unlink(*keys[i : i + 1000])
        store.close()


if __name__ == "__main__":
    main()
