"""RedisStore: the store contract (sync and async) against the real Redis, plus
Redis specifics: atomic rotate across separate connections, no index left
behind, StoreUnavailable on a dead or restarted server, script reload."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from redis_server import RedisServer, running_server
from store_contract import T0, StoreContract, SyncOverAsync, make_record

import pat_middleware
from pat_middleware.core.models import TokenRecord
from pat_middleware.errors import NameTaken, StoreUnavailable
from pat_middleware.stores import Store, store_from_url
from pat_middleware.stores.base import CHANGE_RETENTION
from pat_middleware.stores.redis import _LIST, FIELDS, AsyncRedisStore, RedisStore, StorePlans

pytestmark = pytest.mark.redis


@pytest.fixture
def sync_store(redis_url: str, redis_prefix: str) -> Iterator[RedisStore]:
    store = RedisStore.from_url(redis_url, prefix=redis_prefix)
    yield store
    store.close()


@pytest.fixture
def server() -> Iterator[RedisServer]:
    yield from running_server()


def keys(redis_url: str, prefix: str) -> set[str]:
    with redis.Redis.from_url(redis_url) as client:
        return {k.decode() for k in client.scan_iter(match=prefix + "*", count=1000)}


class TestRedisStoreSync(StoreContract):
    @pytest.fixture
    def store(self, sync_store: RedisStore) -> Store:
        return sync_store


class TestRedisStoreAsync(StoreContract):
    @pytest.fixture
    def store(self, sync_store: RedisStore) -> Iterator[Store]:
        async_store = sync_store.async_store
        assert isinstance(async_store, AsyncRedisStore)
        adapter = SyncOverAsync(async_store)
        yield adapter
        adapter.close()


# -- layout and atomicity -------------------------------------------------------


def test_store_from_url_and_key_layout(redis_url: str, redis_prefix: str) -> None:
    store = store_from_url(redis_url, prefix=redis_prefix)
    assert isinstance(store, RedisStore)
    record = make_record(user_id="u:1", expires_at=T0 + timedelta(days=1))
    store.insert(record)
    p = redis_prefix
    assert keys(redis_url, p) == {
        f"{p}t:{record.id}", f"{p}u:u:1", f"{p}f:{record.id}", f"{p}exp", f"{p}n:u:1", f"{p}ids", f"{p}act",
    }  # fmt: skip
    store.close()


def test_a_record_written_before_resources_existed_is_for_every_resource(
    sync_store: RedisStore, redis_url: str, redis_prefix: str
) -> None:
    record = make_record(resources=("acme/web",))
    sync_store.insert(record)
    with redis.Redis.from_url(redis_url) as client:
        assert client.hget(f"{redis_prefix}t:{record.id}", "resources") == b'["acme/web"]'
        client.hdel(f"{redis_prefix}t:{record.id}", "resources")  # as an older release wrote it
    assert sync_store.get(record.id) == record.evolve(resources=None)
    assert sync_store.list_user("alice") == [record.evolve(resources=None)]
    limited = sync_store.update(record.id, {"resources": ("tools/*",)})
    assert limited is not None and limited.resources == ("tools/*",)


def test_purge_leaves_no_key_behind(sync_store: RedisStore, redis_url: str, redis_prefix: str) -> None:
    records = [make_record(user_id=f"user{i % 3}", expires_at=T0 + timedelta(days=i)) for i in range(9)]
    for record in records:
        sync_store.insert(record)
    successor = make_record(user_id="user0", name=records[0].name, family_id=records[0].id)
    assert sync_store.rotate(records[0].id, successor, T0)
    sync_store.revoke_user("user1", T0)
    sync_store.touch(records[2].id, T0, "192.0.2.1", 3)
    sync_store.update(records[5].id, {"name": "renamed", "expires_at": None})
    assert keys(redis_url, redis_prefix)
    purged = sync_store.purge(T0 + timedelta(days=1000))
    everyone = {r.id for r in records} | {successor.id}
    forever = {records[5].id, successor.id}  # one no longer expires, one never did
    assert set(purged) == everyone - forever
    assert sync_store.revoke_user("user0", T0) == [successor.id]
    assert sync_store.revoke(records[5].id, T0)
    assert sorted(sync_store.purge(T0 + timedelta(days=1000))) == sorted(forever)
    # The change feed's set alone stays: its stamps age out (CHANGE_RETENTION), so a
    # revocation purged at once still reaches every process's feed.
    assert keys(redis_url, redis_prefix) == {f"{redis_prefix}chg"}


def test_concurrent_rotate_on_separate_connections_one_wins(redis_url: str, redis_prefix: str) -> None:
    """16 store instances (16 connection pools, as 16 processes would have) race to
    rotate the same token: exactly one succeeds, exactly one successor exists."""
    stores = [RedisStore.from_url(redis_url, prefix=redis_prefix) for _ in range(16)]
    old = make_record(name="contested")
    stores[0].insert(old)
    barrier = threading.Barrier(len(stores))

    def rotate(store: RedisStore) -> tuple[bool, TokenRecord]:
        new = make_record(name="contested", family_id=old.id, rotated_from=old.id)
        barrier.wait()
        return store.rotate(old.id, new, T0), new

    with ThreadPoolExecutor(len(stores)) as pool:
        results = list(pool.map(rotate, stores))
    winners = [new for won, new in results if won]
    assert len(winners) == 1
    family = stores[0].list_family(old.id)
    assert [r.id for r in family] == [old.id, winners[0].id]
    assert family[0].revoked_at == T0 and family[1].revoked_at is None
    with pytest.raises(NameTaken):
        stores[0].insert(make_record(name="contested"))
    for store in stores:
        store.close()


def test_concurrent_async_renames_to_one_name_one_wins(sync_store: RedisStore) -> None:
    records = [make_record(name=f"n{i}") for i in range(20)]
    for record in records:
        sync_store.insert(record)

    async def race() -> list[object]:
        store = sync_store.async_store
        try:
            return await asyncio.gather(
                *(store.update(r.id, {"name": "prize"}) for r in records), return_exceptions=True
            )
        finally:
            await store.close()

    results = asyncio.run(race())
    assert sum(isinstance(r, TokenRecord) for r in results) == 1
    assert sum(isinstance(r, NameTaken) for r in results) == 19
    assert [r.name for r in sync_store.list_user("alice")].count("prize") == 1


def test_revoke_user_is_all_or_nothing_under_concurrent_inserts(
    sync_store: RedisStore, redis_url: str, redis_prefix: str
) -> None:
    """While one connection inserts tokens, another revokes the user: every token
    that existed when the revoke ran is revoked; later ones stay live; none is half-done."""
    other = RedisStore.from_url(redis_url, prefix=redis_prefix)
    inserted: list[str] = []
    stop = threading.Event()

    def insert() -> None:
        while not stop.is_set():
            record = make_record()
            other.insert(record)
            inserted.append(record.id)

    thread = threading.Thread(target=insert)
    thread.start()
    time.sleep(0.05)
    revoked = set(sync_store.revoke_user("alice", T0))
    stop.set()
    thread.join()
    assert revoked
    for record in sync_store.list_user("alice"):
        assert (record.revoked_at == T0) == (record.id in revoked)
        assert (record.revoked_at is None) == (record.id not in revoked)
    other.close()


def test_async_store_works_in_successive_event_loops(sync_store: RedisStore) -> None:
    record = make_record()
    store = sync_store.async_store

    async def insert() -> None:
        await store.insert(record)

    async def get() -> TokenRecord | None:
        try:
            return await store.get(record.id)
        finally:
            await store.close()

    asyncio.run(insert())
    assert asyncio.run(get()) == record
    assert asyncio.run(get()) == record


# -- failures -------------------------------------------------------------------


def test_dead_server_is_store_unavailable_quickly() -> None:
    store = RedisStore.from_url("redis://127.0.0.1:1/0")
    started = time.monotonic()
    for call in (
        lambda: store.get("K00000000001"),
        lambda: store.insert(make_record()),
        lambda: store.revoke("K00000000001", T0),
    ):
        with pytest.raises(StoreUnavailable) as caught:
            call()
        assert isinstance(caught.value.__cause__, redis.ConnectionError)
        assert caught.value.status_code == 503
    assert time.monotonic() - started < 1.0
    store.close()


def test_async_dead_server_is_store_unavailable() -> None:
    async def main() -> None:
        store = RedisStore.from_url("redis://127.0.0.1:1/0").async_store
        with pytest.raises(StoreUnavailable):
            await store.get("K00000000001")
        with pytest.raises(StoreUnavailable):
            await store.purge(T0)
        await store.close()

    asyncio.run(main())


def test_paused_server_times_out_as_store_unavailable(server: RedisServer) -> None:
    store = RedisStore.from_url(server.url, socket_timeout=0.2)
    record = make_record()
    store.insert(record)
    server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            store.get(record.id)
        assert isinstance(caught.value.__cause__, redis.TimeoutError)
        assert time.monotonic() - started < 1.0
    finally:
        server.resume()
    assert store.get(record.id) == record
    store.close()


def test_restarted_server_recovers_and_reloads_scripts(server: RedisServer) -> None:
    store = RedisStore.from_url(server.url)
    store.insert(make_record())  # loads the insert script
    server.stop()
    with pytest.raises(StoreUnavailable):
        store.insert(make_record())
    server.start()  # empty again (no persistence in tests): scripts are gone too
    record = make_record()
    store.insert(record)  # NOSCRIPT -> load -> retry, on a reconnected pool
    assert store.get(record.id) == record
    with server.client() as client:
        client.script_flush()
    assert store.revoke(record.id, T0)
    store.close()


def test_non_availability_errors_are_not_masked(redis_url: str, redis_prefix: str, sync_store: RedisStore) -> None:
    """A key of the wrong type under the prefix is a misconfiguration, not an outage."""
    with redis.Redis.from_url(redis_url) as client:
        client.set(f"{redis_prefix}t:K00000000001", "not a hash")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        sync_store.get("K00000000001")


# -- the change feed --------------------------------------------------------------


def test_changes_are_stamped_with_server_time_and_old_stamps_pruned(
    sync_store: RedisStore, redis_url: str, redis_prefix: str
) -> None:
    key = f"{redis_prefix}chg"
    retention = int(CHANGE_RETENTION.total_seconds()) * 1_000_000
    with redis.Redis.from_url(redis_url) as client:

        def server_micros() -> int:
            seconds, micros = client.time()
            return seconds * 1_000_000 + micros

        now = server_micros()
        client.zadd(key, {"aged-out": now - retention - 5_000_000, "kept": now - retention + 60_000_000})
        record = make_record()
        sync_store.insert(record)
        sync_store.touch(record.id, T0, "192.0.2.1", 3)
        assert client.zscore(key, "aged-out") is not None  # only a stamping write prunes
        before = server_micros()
        sync_store.revoke(record.id, T0)
        after = server_micros()
        assert before <= int(client.zscore(key, record.id) or 0) <= after
        assert client.zscore(key, "aged-out") is None
        assert client.zscore(key, "kept") is not None


def test_lua_helpers_match_the_python_constants() -> None:
    """store_common.lua spells out FIELDS and CHANGE_RETENTION: they must be Python's."""
    source = (Path(pat_middleware.__file__).parent / "redis" / "lua" / "store_common.lua").read_text()
    assert "local FIELDS = {" + ", ".join(f"'{f}'" for f in FIELDS) + "}\n" in source
    assert f"local RETENTION = {int(CHANGE_RETENTION.total_seconds())}\n" in source
    assert _LIST.source.startswith(source)  # every script runs after the helpers


def test_the_redis_twins_are_made_from_the_plans() -> None:
    """Each store method, sync or async, is the StorePlans method of the same name:
    no store method is written out twice."""
    members = [name for name in vars(Store) if not name.startswith("_") and name != "close"]
    for name in members:
        assert getattr(RedisStore, name).__doc__ == getattr(StorePlans, name).__doc__
        assert asyncio.iscoroutinefunction(getattr(AsyncRedisStore, name))
