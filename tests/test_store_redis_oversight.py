"""RedisStore's administration beyond the contract (which test_store_redis.py runs):
the search indexes (kept by every write, built for tokens an older release wrote,
ties across batches), the log stream (late entries, exact pruning at the
microsecond, batches, no index left behind), notices that expire by themselves."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import redis
from store_contract import T0, make_record

from pat_middleware.core.audit import LogEntry, LogQuery, answer_log, entry_id
from pat_middleware.core.query import TokenQuery, answer, matches, sort_value
from pat_middleware.redis.records import micros
from pat_middleware.stores.redis import RedisStore

pytestmark = pytest.mark.redis

NOW = T0 + timedelta(days=40)


@pytest.fixture
def store(redis_url: str, redis_prefix: str) -> Iterator[RedisStore]:
    store = RedisStore.from_url(redis_url, prefix=redis_prefix)
    yield store
    store.close()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        yield client


def scores(client: redis.Redis, key: str) -> dict[str, int]:
    return {member: round(score) for member, score in client.zrange(key, 0, -1, withscores=True)}


def log_entry(at: datetime, n: int, user: str = "alice", kind: str = "created") -> LogEntry:
    return LogEntry(entry_id(at), at, kind, f"K{n % 7:011d}", user, None, None, None, {"n": n})


# -- search -----------------------------------------------------------------------


def test_every_write_keeps_the_search_indexes(store: RedisStore, client: redis.Redis, redis_prefix: str) -> None:
    records = [make_record(user_id=f"u{i % 3}", created_at=T0 + timedelta(seconds=i)) for i in range(9)]
    for record in records:
        store.insert(record)
    successor = make_record(name=records[0].name, user_id="u0", family_id=records[0].id, created_at=T0 + timedelta(1))
    assert store.rotate(records[0].id, successor, T0)
    store.touch(records[1].id, T0 + timedelta(days=2), "192.0.2.1", 3)
    store.revoke(records[2].id, T0)
    store.purge(T0 + timedelta(hours=1))  # the revoked ones go
    live = [store.get(r.id) for r in [*records, successor]]
    kept = [r for r in live if r is not None]
    assert len(kept) == 8
    assert scores(client, f"{redis_prefix}ids") == {r.id: micros(r.created_at) for r in kept}
    assert scores(client, f"{redis_prefix}act") == {r.id: micros(r.last_activity) for r in kept}


def test_tokens_an_older_release_wrote_are_indexed_on_first_search(
    store: RedisStore, client: redis.Redis, redis_prefix: str
) -> None:
    records = [make_record(user_id=f"u{i % 5}", created_at=T0 + timedelta(minutes=i)) for i in range(2500)]
    for record in records[:1200]:
        store.insert(record)
    client.delete(f"{redis_prefix}ids", f"{redis_prefix}act")  # as 0.1 left them
    for record in records[1200:]:
        store.insert(record)  # written by this release while the old ones are unindexed
    query = TokenQuery(now=NOW, sort="created_at", limit=1000)
    assert [r.id for r in store.search(query)] == [r.id for r in records[:1000]]
    assert client.get(f"{redis_prefix}indexed") == "1"
    assert client.zcard(f"{redis_prefix}ids") == client.zcard(f"{redis_prefix}act") == 2500


def test_pages_cross_batches_of_tied_moments(store: RedisStore) -> None:
    """350 tokens share each of three moments: the walk goes on past the ids of a
    moment it has read, batch after batch, in both directions and both sorts."""
    records = []
    for i in range(1050):
        used = T0 + timedelta(days=1 + i % 3) if i % 2 else None
        records.append(make_record(user_id=f"u{i % 4}", created_at=T0 + timedelta(hours=i % 3), last_used_at=used))
    for record in records:
        store.insert(record)
    for sort in ("created_at", "-created_at", "last_used_at", "-last_used_at"):
        for criteria in ({}, {"name_contains": "7"}):
            query = TokenQuery(now=NOW, sort=sort, limit=130, **criteria)  # type: ignore[arg-type]
            seen = []
            while page := store.search(query):
                seen += page
                last = page[-1]
                query = replace(query, after=(last.created_at if "created" in sort else last.last_activity, last.id))
            hits = [r for r in records if matches(r, query)]
            expected = sorted(hits, key=lambda r: sort_value(r, query.sort), reverse=sort.startswith("-"))
            assert [r.id for r in seen] == [r.id for r in expected], (sort, criteria)


def test_bounds_on_the_sort_dimension_narrow_the_walk(store: RedisStore) -> None:
    records = [
        make_record(created_at=T0 + timedelta(days=i), last_used_at=T0 + timedelta(days=i + 1) if i % 3 else None)
        for i in range(40)
    ]
    for record in records:
        store.insert(record)
    cases = [
        {"sort": "created_at", "created_after": T0 + timedelta(days=10), "created_before": T0 + timedelta(days=20)},
        {"sort": "-created_at", "created_after": T0 + timedelta(days=10), "created_before": T0 + timedelta(days=20)},
        {"sort": "last_used_at", "unused_since": T0 + timedelta(days=12)},
        {"sort": "-last_used_at", "last_used_after": T0 + timedelta(days=5), "last_used_before": T0 + timedelta(30)},
        {"sort": "-last_used_at", "unused_since": T0 + timedelta(days=12), "after": (T0 + timedelta(days=9), "K")},
    ]
    for criteria in cases:
        query = TokenQuery(now=NOW, limit=1000, **criteria)  # type: ignore[arg-type]
        assert [r.id for r in store.search(query)] == [r.id for r in answer(records, query)], criteria


# -- the security log --------------------------------------------------------------


def test_late_entries_take_their_place_in_the_index(store: RedisStore, client: redis.Redis, redis_prefix: str) -> None:
    """Two writers flush overlapping stretches of time, out of order: every entry
    is kept once, the index is in id order, reads are newest first."""
    entries = [log_entry(T0 + timedelta(milliseconds=i), i, ["alice", "bob"][i % 2]) for i in range(600)]
    shuffled = entries[:]
    random.Random(7).shuffle(shuffled)
    barrier = threading.Barrier(2)

    def writer(part: list[LogEntry]) -> None:
        other = RedisStore.from_url(store.clients.url, prefix=redis_prefix)
        barrier.wait()
        for i in range(0, len(part), 25):
            other.append_log(part[i : i + 25])
        other.close()

    threads = [threading.Thread(target=writer, args=(shuffled[k::2],)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.append_log(entries[100:150])  # again: ignored
    stream = client.xrange(f"{redis_prefix}log")
    assert sorted(fields["id"] for _, fields in stream) == sorted(e.id for e in entries)
    members = client.zrange(f"{redis_prefix}log:all", 0, -1)
    assert members == sorted(f"{fields['id']}:{sid}" for sid, fields in stream)
    for query in (LogQuery(limit=1000), LogQuery(user_id="bob", limit=1000), LogQuery(token_id="K00000000003")):
        assert store.read_log(query) == answer_log(entries, query)


def test_reads_in_batches_follow_the_filters(store: RedisStore) -> None:
    entries = [
        log_entry(T0 + timedelta(seconds=i), i, ["alice", "bob", "carol"][i % 3], ["created", "revoked"][i % 7 == 0])
        for i in range(2600)
    ]
    for i in range(0, len(entries), 500):
        store.append_log(entries[i : i + 500])
    since, until = T0 + timedelta(seconds=100), T0 + timedelta(seconds=2400)
    queries = [
        LogQuery(kinds=("revoked",), limit=300),
        LogQuery(user_id="carol", kinds=("revoked",), limit=1000),
        LogQuery(token_id="K00000000001", since=since, until=until, limit=1000),
        LogQuery(since=since, until=until, before=entries[2000].id, limit=1001),
        LogQuery(user_id="alice", before=entries[5].id),
    ]
    for query in queries:
        assert store.read_log(query) == answer_log(entries, query), query


def test_time_bounds_are_exact_to_the_microsecond(store: RedisStore) -> None:
    edge = datetime(2031, 3, 14, 15, 9, 26, 535897, tzinfo=UTC)
    us = timedelta(microseconds=1)
    entries = [log_entry(edge + k * us, k) for k in range(-3, 4)]
    store.append_log(entries)
    for query in (LogQuery(since=edge), LogQuery(until=edge), LogQuery(since=edge - us, until=edge + us)):
        assert store.read_log(query) == answer_log(entries, query), query
    assert store.prune_log(edge) == 3
    assert store.read_log(LogQuery()) == answer_log(entries[3:], LogQuery())


def test_prune_goes_in_batches_and_leaves_no_index_behind(
    store: RedisStore, client: redis.Redis, redis_prefix: str
) -> None:
    entries = [log_entry(T0 + timedelta(seconds=i), i, f"user{i % 40}") for i in range(2700)]
    for i in range(0, len(entries), 500):
        store.append_log(entries[i : i + 500])
    store.claim_notice("K00000000001", "expiring/x", T0 + timedelta(days=3))
    assert store.prune_log(T0 + timedelta(seconds=2100)) == 2100
    assert store.read_log(LogQuery(limit=1000)) == answer_log(entries[2100:], LogQuery(limit=1000))
    assert client.zcard(f"{redis_prefix}log:u:user0") == 15
    assert store.prune_log(T0 + timedelta(days=4)) == 600
    assert set(client.scan_iter(match=f"{redis_prefix}*")) == set()
    store.append_log(entries[:10])  # older than anything the stream held: accepted
    assert store.read_log(LogQuery()) == answer_log(entries[:10], LogQuery())


# -- notices ----------------------------------------------------------------------


def test_a_notice_expires_by_itself_a_day_on_at_least(
    store: RedisStore, client: redis.Redis, redis_prefix: str
) -> None:
    day = 86_400_000
    far = datetime.now(UTC) + timedelta(days=30)
    assert store.claim_notice("K00000000001", "far", far) is True
    assert abs(client.pexpiretime(f"{redis_prefix}nt:K00000000001:far") - micros(far) / 1000) <= 1
    soon = datetime.now(UTC) + timedelta(seconds=30)
    assert store.claim_notice("K00000000001", "soon", soon) is True
    kept_until = client.pexpiretime(f"{redis_prefix}nt:K00000000001:soon")
    assert abs(kept_until - (datetime.now(UTC).timestamp() * 1000 + day)) < 60_000  # a day, not 30 s
    past = datetime.now(UTC) - timedelta(seconds=1)  # a clock behind Redis's: still remembered
    assert store.claim_notice("K00000000001", "late", past) is True
    assert store.claim_notice("K00000000001", "late", past) is False
    assert sorted(client.zrange(f"{redis_prefix}nts", 0, -1)) == [
        f"nt:K00000000001:{k}" for k in ("far", "late", "soon")
    ]


def test_async_twin_answers_alike(store: RedisStore) -> None:
    records = [make_record(created_at=T0 + timedelta(seconds=i)) for i in range(150)]
    for record in records:
        store.insert(record)
    entries = [log_entry(T0 + timedelta(seconds=i), i) for i in range(150)]

    async def main() -> None:
        twin = store.async_store
        try:
            await twin.append_log(entries)
            query = TokenQuery(now=NOW, sort="-created_at", limit=120)
            assert [r.id for r in await twin.search(query)] == [r.id for r in answer(records, query)]
            assert await twin.read_log(LogQuery(limit=120)) == answer_log(entries, LogQuery(limit=120))
            assert await twin.prune_log(T0 + timedelta(seconds=50)) == 50
            assert await twin.claim_notice("K00000000001", "k", T0) is True
            assert await twin.claim_notice("K00000000001", "k", T0) is False
        finally:
            await twin.close()

    asyncio.run(main())
