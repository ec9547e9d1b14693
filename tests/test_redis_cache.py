"""RedisCache against the real Redis: lookup/store/fail/invalidate/tombstone/
claim_touch semantics, sync/async parity, CacheUnavailable on outages, and the
invalidation listener (delivery, loss detection, reconnect, re-sending lost
invalidations, clean shutdown) against a throwaway redis-server."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis_server import RedisServer, running_server

from pat_middleware.cache import CacheUnavailable, Failure, SharedLookup
from pat_middleware.redis_cache import RedisCache

pytestmark = pytest.mark.redis

D1 = hashlib.sha256(b"token one").digest()
D2 = hashlib.sha256(b"token two").digest()
ID = "K00000000001"


@pytest.fixture
def cache(redis_url: str, redis_prefix: str) -> Iterator[RedisCache]:
    c = RedisCache(redis_url, prefix=redis_prefix, tombstone_ttl=0.3)
    yield c
    c.close()


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as client:
        yield client


@pytest.fixture
def server() -> Iterator[RedisServer]:
    yield from running_server()


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> float:
    """Poll ``condition`` every millisecond; return the seconds it took, fail on timeout."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(0.001)
    return time.monotonic() - started


class Recorder:
    """Callbacks for ``listen`` that remember what they saw."""

    def __init__(self, cache: RedisCache | None = None) -> None:
        self.cache = cache
        self.invalidated: list[list[str]] = []
        self.reconnects = 0
        self.subscribed_during_reconnect: list[bool] = []

    def on_invalidate(self, ids: list[str]) -> None:
        self.invalidated.append(ids)

    def on_reconnect(self) -> None:
        if self.cache is not None:
            self.subscribed_during_reconnect.append(self.cache.subscribed)
        self.reconnects += 1

    def ids(self) -> set[str]:
        return {i for batch in self.invalidated for i in batch}


# -- operations -----------------------------------------------------------------


def test_lookup_empty(cache: RedisCache) -> None:
    assert cache.lookup(ID, D1) == SharedLookup(entry=None, negative=None, failures=0)


def test_store_then_lookup_with_ttl(cache: RedisCache, raw: redis.Redis) -> None:
    cache.store(ID, b'{"entry": 1}', 30.0)
    assert cache.lookup(ID, D1) == SharedLookup(entry=b'{"entry": 1}', negative=None, failures=0)
    # the positive entry is per id; comparing digests is the core's job
    assert cache.lookup(ID, D2).entry == b'{"entry": 1}'
    assert cache.lookup("K00000000002", D1).entry is None
    ttl = raw.pttl(cache.plans.key(ID, "e"))
    assert 29_000 < ttl <= 30_000


def test_store_expires(cache: RedisCache) -> None:
    cache.store(ID, b"entry", 0.05)
    wait_for(lambda: cache.lookup(ID, D1).entry is None, timeout=1.0)


def test_fail_counts_and_negative_entries_are_per_digest(cache: RedisCache) -> None:
    assert cache.fail(Failure(ID, D1, "bad_secret", 0.2, 60.0)) == 1
    assert cache.fail(Failure(ID, D1, "bad_secret", 0.2, 60.0)) == 2
    assert cache.fail(Failure(ID, D2, "revoked", 0.2, 60.0)) == 3
    assert cache.lookup(ID, D1) == SharedLookup(entry=None, negative="bad_secret", failures=3, failures_all=3)
    assert cache.lookup(ID, D2).negative == "revoked"
    assert cache.lookup(ID, hashlib.sha256(b"other").digest()) == SharedLookup(None, None, 3, 3)
    assert cache.lookup("K00000000002", D1) == SharedLookup(None, None, 0)
    # negative entries end with their ttl, the counter with its window
    wait_for(lambda: cache.lookup(ID, D1).negative is None, timeout=1.0)
    assert cache.lookup(ID, D1).failures == 3


def test_failures_are_counted_per_client_and_for_every_address(cache: RedisCache) -> None:
    for client in ("192.0.2.1", "192.0.2.2", "192.0.2.2"):
        cache.fail(Failure(ID, D1, "bad_secret", 0.2, 60.0, client))
    assert cache.lookup(ID, D2, "192.0.2.2").failures == 2
    assert cache.lookup(ID, D2, "192.0.2.1").failures == 1
    assert cache.lookup(ID, D2, "192.0.2.3") == SharedLookup(None, None, 0, 3)


def test_failure_window_resets(cache: RedisCache) -> None:
    assert cache.fail(Failure(ID, D1, "bad_secret", 0.05, 0.3)) == 1
    assert cache.fail(Failure(ID, D1, "bad_secret", 0.05, 0.3)) == 2
    wait_for(lambda: cache.lookup(ID, D1).failures == 0, timeout=1.0)
    assert cache.fail(Failure(ID, D1, "bad_secret", 0.05, 0.3)) == 1


def test_invalidate_deletes_entries_and_leaves_a_tombstone(cache: RedisCache, raw: redis.Redis) -> None:
    cache.store(ID, b"entry", 30.0)
    cache.fail(Failure(ID, D1, "expired", 30.0, 60.0))
    cache.fail(Failure(ID, D2, "bad_secret", 30.0, 60.0))
    other = "K00000000002"
    cache.store(other, b"other", 30.0)
    cache.invalidate([ID])
    assert cache.lookup(ID, D1) == SharedLookup(entry=None, negative=None, failures=2, failures_all=2)
    assert cache.lookup(ID, D2).negative is None
    assert cache.lookup(other, D1).entry == b"other"  # untouched
    assert 0 < raw.pttl(cache.plans.key(ID, "t")) <= 300
    # a cold verification that read the store before the revocation cannot refill
    cache.store(ID, b"stale", 30.0)
    assert cache.lookup(ID, D1).entry is None
    # nor leave a negative entry (a changed record may verify now); it still counts
    assert cache.fail(Failure(ID, D1, "expired", 30.0, 60.0)) == 3
    assert cache.lookup(ID, D1).negative is None
    # the tombstone ends after tombstone_ttl
    wait_for(lambda: raw.exists(cache.plans.key(ID, "t")) == 0, timeout=1.0)
    cache.store(ID, b"fresh", 30.0)
    assert cache.lookup(ID, D1).entry == b"fresh"


def test_invalidate_many_and_empty(cache: RedisCache, raw: redis.Redis) -> None:
    ids = [f"K{n:011d}" for n in range(50)]
    for token_id in ids:
        cache.store(token_id, b"e", 30.0)
    cache.invalidate([])
    assert all(cache.lookup(i, D1).entry == b"e" for i in ids)
    cache.invalidate(ids + ids[:5])
    assert all(cache.lookup(i, D1).entry is None for i in ids)
    assert all(raw.exists(cache.plans.key(i, "t")) for i in ids)


def test_claim_touch(cache: RedisCache) -> None:
    assert cache.claim_touch(ID, "192.0.2.1", 0.2) is True
    assert cache.claim_touch(ID, "192.0.2.1", 0.2) is False
    assert cache.claim_touch(ID, "2001:db8::1", 0.2) is True
    assert cache.claim_touch(ID, None, 0.2) is True
    assert cache.claim_touch(ID, None, 0.2) is False
    assert cache.claim_touch("K00000000002", "192.0.2.1", 0.2) is True
    wait_for(lambda: cache.claim_touch(ID, "192.0.2.1", 0.2), timeout=1.0)


def test_claim_touch_one_winner_across_clients(redis_url: str, redis_prefix: str) -> None:
    caches = [RedisCache(redis_url, prefix=redis_prefix) for _ in range(8)]
    barrier = threading.Barrier(len(caches))
    wins: list[bool] = []

    def claim(c: RedisCache) -> None:
        barrier.wait()
        wins.append(c.claim_touch(ID, "192.0.2.1", 5.0))

    threads = [threading.Thread(target=claim, args=(c,)) for c in caches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]
    for c in caches:
        c.close()


def test_keys_share_the_id_hash_tag(cache: RedisCache) -> None:
    assert cache.plans.key(ID, "e") == f"{cache.plans.prefix}{{{ID}}}:e"
    assert cache.channel == cache.plans.prefix + "invalidate"
    assert RedisCache(prefix="x:", channel="chan").channel == "chan"


# -- sync/async parity ----------------------------------------------------------

SCENARIO: list[tuple[str, tuple[Any, ...]]] = [
    ("lookup", (ID, D1)),
    ("store", (ID, b"entry", 30.0)),
    ("lookup", (ID, D1)),
    ("fail", (Failure(ID, D1, "bad_secret", 30.0, 60.0),)),
    ("fail", (Failure(ID, D2, "expired", 30.0, 60.0),)),
    ("lookup", (ID, D1)),
    ("lookup", (ID, D2)),
    ("claim_touch", (ID, "192.0.2.1", 30.0)),
    ("claim_touch", (ID, "192.0.2.1", 30.0)),
    ("claim_touch", (ID, None, 30.0)),
    ("invalidate", ([ID, "K00000000002"],)),
    ("lookup", (ID, D1)),
    ("store", (ID, b"stale", 30.0)),
    ("lookup", (ID, D2)),
    ("fail", (Failure(ID, D1, "bad_secret", 30.0, 60.0),)),
    ("lookup", (ID, D1)),
]


def test_sync_and_async_give_identical_results(redis_url: str, redis_prefix: str) -> None:
    sync_cache = RedisCache(redis_url, prefix=redis_prefix + "sync:")
    sync_results = [getattr(sync_cache, m)(*args) for m, args in SCENARIO]

    async def run_async() -> list[Any]:
        owner = RedisCache(redis_url, prefix=redis_prefix + "async:")
        cache = owner.async_cache
        try:
            return [await getattr(cache, m)(*args) for m, args in SCENARIO]
        finally:
            await cache.close()

    async_results = asyncio.run(run_async())
    assert sync_results == async_results
    # and the scenario did exercise every outcome
    assert SharedLookup(b"entry", "bad_secret", 2, 2) in sync_results
    assert SharedLookup(None, None, 2, 2) in sync_results
    assert [r for r in sync_results if isinstance(r, bool)] == [True, False, True]
    sync_cache.close()


def test_async_cache_works_in_successive_event_loops(redis_url: str, redis_prefix: str) -> None:
    """An asyncio connection belongs to one loop; each loop gets its own client."""
    owner = RedisCache(redis_url, prefix=redis_prefix)
    cache = owner.async_cache

    async def claim() -> bool:
        return await cache.claim_touch(ID, None, 30.0)

    assert [asyncio.run(claim()) for _ in range(3)] == [True, False, False]

    async def close() -> None:
        await cache.close()

    asyncio.run(close())
    owner.close()


# -- outages ----------------------------------------------------------------------


def _every_call(cache: Any) -> list[tuple[str, tuple[Any, ...]]]:
    return [
        ("lookup", (ID, D1)),
        ("store", (ID, b"e", 1.0)),
        ("fail", (Failure(ID, D1, "bad_secret", 1.0, 1.0),)),
        ("invalidate", ([ID],)),
        ("claim_touch", (ID, None, 1.0)),
    ]


def test_dead_port_raises_cache_unavailable_fast_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    cache = RedisCache("redis://127.0.0.1:1/0")
    caplog.set_level(logging.WARNING, logger="pat_middleware.redis")
    for _ in range(3):
        for method, args in _every_call(cache):
            started = time.monotonic()
            with pytest.raises(CacheUnavailable) as caught:
                getattr(cache, method)(*args)
            assert time.monotonic() - started < 0.5
            assert isinstance(caught.value.__cause__, redis.ConnectionError)
    outage_logs = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(outage_logs) == 1
    assert cache.pending_invalidations == [ID]
    cache.close()


def test_async_dead_port_raises_cache_unavailable() -> None:
    async def main() -> None:
        owner = RedisCache("redis://127.0.0.1:1/0")
        cache = owner.async_cache
        for method, args in _every_call(cache):
            with pytest.raises(CacheUnavailable):
                await getattr(cache, method)(*args)
        assert owner.pending_invalidations == [ID]
        await cache.close()

    asyncio.run(main())


def test_paused_server_times_out_within_socket_timeout(server: RedisServer) -> None:
    cache = RedisCache(server.url, socket_timeout=0.2, retry_after=0.0)
    cache.store(ID, b"e", 30.0)
    server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(CacheUnavailable) as caught:
            cache.lookup(ID, D1)
        assert isinstance(caught.value.__cause__, redis.TimeoutError)
        assert 0.15 < time.monotonic() - started < 0.6
    finally:
        server.resume()
    assert cache.lookup(ID, D1).entry == b"e"
    cache.close()


def test_non_availability_redis_errors_are_cache_unavailable_too(cache: RedisCache, raw: redis.Redis) -> None:
    raw.hset(cache.plans.key(ID, "f"), "x", "1")  # WRONGTYPE for INCR
    with pytest.raises(CacheUnavailable) as caught:
        cache.fail(Failure(ID, D1, "bad_secret", 1.0, 1.0))
    assert isinstance(caught.value.__cause__, redis.ResponseError)


def test_an_invalidation_refused_with_an_error_reply_is_kept_to_resend(redis_url: str) -> None:
    # A reachable Redis that answers with an error (here: no database 99) applied
    # nothing: the invalidation is pending, as when Redis is down.
    base = redis_url.rsplit("/", 1)[0]
    cache = RedisCache(f"{base}/99")
    with pytest.raises(CacheUnavailable) as caught:
        cache.invalidate([ID])
    assert isinstance(caught.value.__cause__, redis.ResponseError)
    assert cache.pending_invalidations == [ID]
    cache.close()


def test_cache_recovers_after_restart_and_reloads_scripts(server: RedisServer) -> None:
    cache = RedisCache(server.url, retry_after=0.0)
    cache.store(ID, b"e", 30.0)
    server.stop()
    with pytest.raises(CacheUnavailable):
        cache.lookup(ID, D1)
    server.start()  # empty: no data, no scripts
    assert cache.lookup(ID, D1) == SharedLookup(None, None, 0)
    cache.store(ID, b"again", 30.0)  # NOSCRIPT -> load -> retry
    assert cache.lookup(ID, D1).entry == b"again"
    cache.close()


def test_outage_fails_fast_then_probes_again(server: RedisServer) -> None:
    cache = RedisCache(server.url, socket_timeout=0.2, retry_after=0.6)
    cache.store(ID, b"e", 30.0)
    server.pause()  # replies never come: each real attempt costs socket_timeout
    try:
        started = time.monotonic()
        with pytest.raises(CacheUnavailable):
            cache.lookup(ID, D1)
        assert time.monotonic() - started >= 0.15
        for _ in range(20):  # inside retry_after: no I/O, no waiting
            started = time.monotonic()
            with pytest.raises(CacheUnavailable) as caught:
                cache.lookup(ID, D1)
            # well under socket_timeout (0.2 s), with room for a busy machine's scheduling
            assert time.monotonic() - started < 0.1
            assert isinstance(caught.value.__cause__, redis.ConnectionError)
    finally:
        server.resume()
    time.sleep(0.65)
    assert cache.lookup(ID, D1).entry == b"e"  # the probe goes through and closes the breaker
    assert cache.lookup(ID, D1).entry == b"e"
    cache.close()


def test_steady_traffic_still_probes_during_an_outage(server: RedisServer) -> None:
    """Calls skipped during an outage must not push the next probe back: under
    steady traffic (and no listener to notice the return) the cache answers
    again within about ``retry_after`` of Redis coming back."""
    cache = RedisCache(server.url, retry_after=0.3)
    server.stop()
    with pytest.raises(CacheUnavailable):
        cache.lookup(ID, D1)
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:  # a call every 5 ms, all skipped or failed
        with pytest.raises(CacheUnavailable):
            cache.lookup(ID, D1)
        time.sleep(0.005)
    server.start()
    back = time.monotonic()
    while True:
        try:
            cache.lookup(ID, D1)
            break
        except CacheUnavailable:
            assert time.monotonic() - back < 0.3 + 0.5, "no call probed Redis again"
            time.sleep(0.005)
    cache.close()


def test_a_delete_not_sent_hides_the_entry_from_this_process_until_it_is(server: RedisServer) -> None:
    """The change feed's forget fails (Redis frozen): this process must not take
    the id's shared entry, which still stands in Redis for others, until its
    delete has been re-sent."""
    cache = RedisCache(server.url, socket_timeout=0.2, retry_after=0.0)
    cache._listener.stop()  # no re-send behind the test's back
    other = RedisCache(server.url)
    other.store(ID, b"stale", 30.0)
    server.pause()
    try:
        with pytest.raises(CacheUnavailable):
            cache.forget([ID])
    finally:
        server.resume()
    assert (cache.pending_deletes, cache.pending_invalidations) == ([ID], [])
    assert other.lookup(ID, D1).entry == b"stale"  # still there for a process that knows nothing
    assert cache.lookup(ID, D1).entry is None  # ignored here
    cache._resend_pending()
    assert cache.pending_deletes == []
    assert other.lookup(ID, D1).entry is None
    cache.close()
    other.close()


def test_bad_replies_do_not_open_the_breaker(cache: RedisCache, raw: redis.Redis) -> None:
    raw.hset(cache.plans.key(ID, "f"), "x", "1")  # WRONGTYPE for INCR
    with pytest.raises(CacheUnavailable):
        cache.fail(Failure(ID, D1, "bad_secret", 1.0, 1.0))
    assert cache.lookup(ID, D1).failures == 0  # answered at once: the breaker stayed closed
    cache.store(ID, b"e", 30.0)
    assert cache.lookup(ID, D1).entry == b"e"


# -- the invalidation listener -------------------------------------------------


def test_listener_receives_invalidations_from_another_client(redis_url: str, redis_prefix: str) -> None:
    listener = RedisCache(redis_url, prefix=redis_prefix)
    sender = RedisCache(redis_url, prefix=redis_prefix)
    seen = Recorder(listener)
    assert listener.subscribed is False
    listener.listen(seen.on_invalidate, seen.on_reconnect)
    wait_for(lambda: listener.subscribed)
    assert seen.reconnects == 1 and seen.subscribed_during_reconnect == [False]
    sender.invalidate(["K00000000001", "K00000000002"])
    wait_for(lambda: len(seen.invalidated) == 1)
    assert seen.invalidated == [["K00000000001", "K00000000002"]]
    with redis.Redis.from_url(redis_url) as raw:
        raw.publish(listener.channel, "")  # empty: ignored
        raw.publish(listener.channel, "K00000000003,,K00000000004")
        raw.publish(redis_prefix + "other-channel", "K00000000005")
    wait_for(lambda: len(seen.invalidated) == 2)
    assert seen.invalidated[1] == ["K00000000003", "K00000000004"]
    listener.listen(seen.on_invalidate, seen.on_reconnect)  # a second call starts nothing
    mine = [t for t in threading.enumerate() if t.name == f"pat-redis-listener[{listener.channel}]"]
    assert len(mine) == 1 and mine[0] is listener._listener._daemon.thread
    listener.close()
    sender.close()


def test_close_joins_the_thread_and_is_idempotent(redis_url: str, redis_prefix: str) -> None:
    cache = RedisCache(redis_url, prefix=redis_prefix)
    seen = Recorder()
    cache.listen(seen.on_invalidate, seen.on_reconnect)
    wait_for(lambda: cache.subscribed)
    thread = cache._listener._daemon.thread
    assert thread is not None and thread.is_alive() and thread.daemon
    started = time.monotonic()
    cache.close()
    assert time.monotonic() - started < 1.0
    assert not thread.is_alive()
    assert cache.subscribed is False
    cache.close()
    cache.listen(seen.on_invalidate, seen.on_reconnect)  # after close: nothing starts
    assert not thread.is_alive() and cache._listener._daemon.thread is thread


def test_async_close_stops_the_listener(redis_url: str, redis_prefix: str) -> None:
    owner = RedisCache(redis_url, prefix=redis_prefix)

    async def main() -> None:
        cache = owner.async_cache
        cache.listen(lambda ids: None, lambda: None)
        await cache.lookup(ID, D1)
        await cache.close()
        await cache.close()

    asyncio.run(main())
    thread = owner._listener._daemon.thread
    assert thread is not None and not thread.is_alive()


def test_killed_pubsub_connection_is_noticed_and_resubscribed(server: RedisServer) -> None:
    cache = RedisCache(server.url)
    seen = Recorder(cache)
    cache.listen(seen.on_invalidate, seen.on_reconnect)
    wait_for(lambda: cache.subscribed)
    with server.client() as raw:
        assert raw.client_kill_filter(_type="pubsub") == 1
        wait_for(lambda: not cache.subscribed, timeout=0.5)
        wait_for(lambda: cache.subscribed, timeout=3.0)
        # flushed when the loss was noticed, and again once resubscribed
        assert seen.reconnects == 3
        assert seen.subscribed_during_reconnect == [False, False, False]
        raw.publish(cache.channel, ID)
    wait_for(lambda: seen.ids() == {ID})
    cache.close()


def test_stopped_server_is_noticed_and_recovered(server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pat_middleware.redis")
    cache = RedisCache(server.url)
    seen = Recorder(cache)
    cache.listen(seen.on_invalidate, seen.on_reconnect)
    wait_for(lambda: cache.subscribed)
    server.stop()
    assert wait_for(lambda: not cache.subscribed, timeout=1.0) < 1.0
    wait_for(lambda: seen.reconnects == 2)  # the local cache is flushed on the loss
    time.sleep(1.0)  # several reconnect attempts fail meanwhile
    assert seen.reconnects == 2
    server.start()
    wait_for(lambda: cache.subscribed, timeout=3.0)  # backoff is capped at 2 s
    assert seen.reconnects == 3 and seen.subscribed_during_reconnect == [False] * 3
    lost = [r for r in caplog.records if "lost" in r.getMessage()]
    assert len(lost) == 1  # logged once per outage, not per attempt
    with server.client() as raw:
        raw.publish(cache.channel, ID)
    wait_for(lambda: seen.ids() == {ID})
    cache.close()


def test_silently_dead_server_is_noticed_within_a_second(server: RedisServer) -> None:
    cache = RedisCache(server.url, ping_interval=0.4)
    seen = Recorder(cache)
    cache.listen(seen.on_invalidate, seen.on_reconnect)
    wait_for(lambda: cache.subscribed)
    time.sleep(0.5)  # mid-way between health checks
    server.pause()
    try:
        assert wait_for(lambda: not cache.subscribed, timeout=1.5) < 1.0
        wait_for(lambda: seen.reconnects == 2)  # flushed as soon as the loss is noticed
    finally:
        server.resume()
    wait_for(lambda: cache.subscribed, timeout=3.0)
    assert seen.reconnects == 3
    cache.close()


def test_lost_invalidation_is_resent_when_redis_returns(server: RedisServer) -> None:
    revoker = RedisCache(server.url, tombstone_ttl=30.0)
    other = RedisCache(server.url)
    seen = Recorder(other)
    other.listen(seen.on_invalidate, seen.on_reconnect)
    wait_for(lambda: other.subscribed)
    server.stop()
    with pytest.raises(CacheUnavailable):
        revoker.invalidate([ID])
    assert revoker.pending_invalidations == [ID]
    server.start()
    # the revoker never called listen(): the failed invalidation started its thread
    wait_for(lambda: revoker.pending_invalidations == [], timeout=3.0)
    with server.client() as raw:
        assert raw.exists(revoker.plans.key(ID, "t")) == 1
    revoker.store(ID, b"stale", 30.0)  # refused by the re-sent tombstone
    assert revoker.lookup(ID, D1).entry is None
    # the other process either got the message or flushed on its reconnect
    wait_for(lambda: other.subscribed, timeout=3.0)
    assert seen.reconnects == 3
    revoker.close()
    other.close()


def test_failing_on_invalidate_forces_a_flush(redis_url: str, redis_prefix: str) -> None:
    cache = RedisCache(redis_url, prefix=redis_prefix)
    seen = Recorder(cache)
    calls = 0

    def broken(ids: list[str]) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("bug in the callback")

    cache.listen(broken, seen.on_reconnect)
    wait_for(lambda: cache.subscribed)
    cache.invalidate([ID])
    wait_for(lambda: seen.reconnects == 3, timeout=3.0)  # flushed on the failure and on resubscribing
    assert calls == 1
    wait_for(lambda: cache.subscribed)
    cache.close()


# -- after a lost channel ---------------------------------------------------------


def test_entries_written_before_a_lost_channel_are_not_trusted_after_it(server: RedisServer) -> None:
    """An entry may stand for a token revoked while Redis was frozen (its
    invalidation could not be delivered): once the channel was lost, entries
    written before its recovery count as absent."""
    cache = RedisCache(server.url, ping_interval=0.1, socket_timeout=0.1)
    try:
        cache.listen(lambda ids: None, lambda: None)
        wait_for(lambda: cache.subscribed)
        cache.store(ID, b"before", 30.0)
        assert cache.lookup(ID, D1).entry == b"before"
        server.pause()
        wait_for(lambda: cache._listener.lost)
        assert cache.written_after == float("inf")
        server.resume()
        wait_for(lambda: cache.subscribed and not cache._listener.lost)
        assert cache.lookup(ID, D1).entry is None  # written before the outage
        assert server.client().get(cache.plans.key(ID, "e")) is not None  # still there, just not trusted
        cache.store(ID, b"after", 30.0)
        assert cache.lookup(ID, D1).entry == b"after"
    finally:
        cache.close()


def test_an_invalidation_lost_in_a_blip_is_resent_on_the_next_health_check(server: RedisServer) -> None:
    """A blip shorter than the channel's PING deadline does not break the
    channel; the invalidation it swallowed is re-sent at the next PONG,
    not at some later reconnect."""
    cache = RedisCache(server.url, ping_interval=2.0, socket_timeout=0.05)
    try:
        cache.listen(lambda ids: None, lambda: None)
        wait_for(lambda: cache.subscribed)
        cache.store(ID, b"entry", 30.0)
        server.pause()
        with pytest.raises(CacheUnavailable):
            cache.invalidate([ID])
        assert cache.pending_invalidations == [ID]
        server.resume()
        wait_for(lambda: not cache.pending_invalidations, timeout=6.0)
        assert server.client().get(cache.plans.key(ID, "e")) is None
        assert cache.subscribed  # the channel never broke
    finally:
        cache.close()


# -- admission: argon2 runs counted before they start ------------------------------------


def test_admit_counts_before_the_run_and_refund_takes_it_back(cache: RedisCache, raw: redis.Redis) -> None:
    assert cache.admit(ID, "192.0.2.1", 60.0) == (1, 1)
    assert cache.admit(ID, "192.0.2.2", 60.0) == (1, 2)
    assert cache.lookup(ID, D1, "192.0.2.1") == SharedLookup(None, None, 1, 2)  # other processes see it at once
    cache.refund(ID, "192.0.2.1")  # the secret matched
    assert cache.lookup(ID, D1, "192.0.2.1") == SharedLookup(None, None, 0, 1)
    # a failure already admitted is not counted again; one that was not admitted is
    assert cache.fail(Failure(ID, D1, "bad_secret", 30.0, 60.0, "192.0.2.2", count=False)) == 1
    assert cache.lookup(ID, D2, "192.0.2.2").failures_all == 1
    cache.fail(Failure(ID, D2, "unknown", 30.0, 60.0, "192.0.2.2"))
    assert cache.lookup(ID, D1, "192.0.2.2") == SharedLookup(None, "bad_secret", 2, 2)
    assert 0 < raw.pttl(cache.plans.key(ID, "fa")) <= 60_000


def test_a_refund_after_the_window_leaves_no_key_behind(cache: RedisCache, raw: redis.Redis) -> None:
    cache.admit(ID, None, 0.05)
    time.sleep(0.1)
    cache.refund(ID, None)
    assert raw.exists(cache.plans.key(ID, "fa"), cache.plans.key(ID, "f")) == 0  # no -1, no key without a TTL


def test_a_busy_connection_pool_is_not_an_outage() -> None:
    from redis.exceptions import ConnectionError, MaxConnectionsError

    from pat_middleware.redis_exec import is_unavailable

    assert not is_unavailable(ConnectionError("No connection available."))
    assert not is_unavailable(MaxConnectionsError("Too many connections"))
    assert is_unavailable(ConnectionError("Connection refused"))


def test_the_cache_and_its_async_twin_are_made_from_the_plans() -> None:
    """Each SharedCache method of both caches is the CachePlans method of the same
    name, sent by the one executor they share: none is written out twice."""
    from pat_middleware.cache import AsyncSharedCache
    from pat_middleware.redis_cache import AsyncRedisCache
    from pat_middleware.redis_plans import CachePlans

    names = [n for n in vars(AsyncSharedCache) if not n.startswith("_") and n != "close"]
    assert "lookup" in names and "invalidate" in names
    for name in names:
        assert getattr(RedisCache, name).__doc__ == getattr(CachePlans, name).__doc__
        assert asyncio.iscoroutinefunction(getattr(AsyncRedisCache, name))
    cache = RedisCache("redis://127.0.0.1:1/0")
    try:
        assert cache.async_cache.executor is cache.executor
    finally:
        cache.close()


def test_an_empty_invalidation_sends_nothing(redis_url: str, redis_prefix: str) -> None:
    cache = RedisCache("redis://127.0.0.1:1/0", prefix=redis_prefix)  # nothing listens there
    try:
        cache.invalidate([])
        cache.forget([])
        asyncio.run(cache.async_cache.invalidate([]))
        assert cache.pending_invalidations == [] and cache.pending_deletes == []
    finally:
        cache.close()
