"""Single-flight of cold verifications, the argon2 bound on both paths, and the
per-key-id failure budget (many addresses flooding one key id)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pat_middleware import InvalidToken, MemoryStore, PATAuth, StoreUnavailable
from pat_middleware.core.models import TokenRecord
from tests.helpers import FAST_ARGON2
from tests.test_verify import _forged


class SlowCountingHasher:
    """The real fast argon2 hasher, made slower (so requests overlap), counting
    its runs, the most that ran at once and the threads they ran on."""

    def __init__(self, delay: float = 0.05) -> None:
        self.delay = delay
        self.verifications = 0
        self.running = 0
        self.most_at_once = 0
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def hash(self, secret: str) -> str:
        return FAST_ARGON2.hash(secret)

    def verify(self, stored: str, secret: str) -> bool:
        with self._lock:
            self.verifications += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.threads.add(threading.current_thread().name)
        try:
            time.sleep(self.delay)
            return FAST_ARGON2.verify(stored, secret)
        finally:
            with self._lock:
                self.running -= 1

    def needs_rehash(self, stored: str) -> bool:
        return False


class CountingStore(MemoryStore):
    """A MemoryStore counting ``get`` calls; ``down`` makes them fail."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.down = False

    def get(self, token_id: str) -> TokenRecord | None:
        self.reads += 1
        time.sleep(0.01)
        if self.down:
            raise ConnectionError("store is down")
        return super().get(token_id)


@pytest.fixture
def hasher() -> SlowCountingHasher:
    return SlowCountingHasher()


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


def _auth(store: CountingStore, hasher: SlowCountingHasher, **options: object) -> PATAuth:
    return PATAuth(store, hasher=hasher, **options)  # type: ignore[arg-type]


def test_64_concurrent_tasks_with_one_cold_token_share_one_store_read_and_one_argon2_run(
    store: CountingStore, hasher: SlowCountingHasher
) -> None:
    auth = _auth(store, hasher)
    token = auth.manager.create("alice", "ci").token
    store.reads = 0

    async def burst() -> list[str]:
        principals = await asyncio.gather(*(auth.averify(token, client_ip=f"192.0.2.{i}") for i in range(64)))
        return [p.user_id for p in principals]

    try:
        assert asyncio.run(burst()) == ["alice"] * 64
        assert (hasher.verifications, store.reads) == (1, 1)
        assert len(auth._async_flights) == 0
    finally:
        auth.close()


def test_32_threads_with_one_cold_token_share_one_store_read_and_one_argon2_run(
    store: CountingStore, hasher: SlowCountingHasher
) -> None:
    auth = _auth(store, hasher)
    token = auth.manager.create("alice", "ci").token
    store.reads = 0
    start = threading.Barrier(32)

    def request(i: int) -> str:
        start.wait()
        return auth.verify(token, client_ip=f"192.0.2.{i}").user_id

    try:
        with ThreadPoolExecutor(32) as pool:
            assert list(pool.map(request, range(32))) == ["alice"] * 32
        assert (hasher.verifications, store.reads) == (1, 1)
        assert len(auth._sync_flights) == 0
    finally:
        auth.close()


def test_followers_of_a_refused_token_are_refused_without_their_own_argon2_run(
    store: CountingStore, hasher: SlowCountingHasher
) -> None:
    auth = _auth(store, hasher)
    token = auth.manager.create("alice", "ci").token
    forged = _forged(token, 1)[0]
    start = threading.Barrier(16)

    def request(_: int) -> str:
        start.wait()
        with pytest.raises(InvalidToken) as info:
            auth.verify(forged, client_ip="192.0.2.1")
        return info.value.reason

    try:
        with ThreadPoolExecutor(16) as pool:
            assert set(pool.map(request, range(16))) == {"bad_secret"}
        assert hasher.verifications == 1
    finally:
        auth.close()


def test_followers_share_the_leaders_store_outage_and_the_next_request_tries_again(
    store: CountingStore, hasher: SlowCountingHasher
) -> None:
    auth = _auth(store, hasher)
    token = auth.manager.create("alice", "ci").token
    store.down, store.reads = True, 0

    async def burst() -> list[BaseException | object]:
        return await asyncio.gather(*(auth.averify(token) for _ in range(20)), return_exceptions=True)

    try:
        results = asyncio.run(burst())
        assert all(isinstance(r, StoreUnavailable) for r in results)
        assert store.reads == 1
        store.down = False
        assert auth.verify(token).user_id == "alice"
    finally:
        auth.close()


def test_a_cancelled_leader_hands_the_flight_on(store: CountingStore, hasher: SlowCountingHasher) -> None:
    auth = _auth(store, hasher)
    token = auth.manager.create("alice", "ci").token

    async def scenario() -> str:
        leader = asyncio.ensure_future(auth.averify(token))
        await asyncio.sleep(0.005)  # the leader is reading the store
        follower = asyncio.ensure_future(auth.averify(token))
        await asyncio.sleep(0)
        leader.cancel()
        principal = await asyncio.wait_for(follower, 5)
        return principal.user_id

    try:
        assert asyncio.run(scenario()) == "alice"
        assert len(auth._async_flights) == 0
    finally:
        auth.close()


def test_argon2_runs_only_on_the_hash_pool_and_at_most_hash_workers_at_once(
    store: CountingStore, hasher: SlowCountingHasher
) -> None:
    """Sync callers (a threaded WSGI server) and async callers alike."""
    auth = _auth(store, hasher, hash_workers=2)
    tokens = [auth.manager.create("alice", f"t{i}").token for i in range(16)]
    start = threading.Barrier(8)

    def sync_request(i: int) -> str:
        start.wait()
        return auth.verify(tokens[i]).user_id

    async def async_requests() -> list[str]:
        return [p.user_id for p in await asyncio.gather(*(auth.averify(t) for t in tokens[8:]))]

    try:
        with ThreadPoolExecutor(9) as pool:
            from_threads = pool.map(sync_request, range(8))
            from_tasks = pool.submit(asyncio.run, async_requests())
            assert list(from_threads) + from_tasks.result() == ["alice"] * 16
        assert hasher.verifications == 16
        assert hasher.most_at_once <= 2
        assert all(name.startswith("pat-hash") for name in hasher.threads), hasher.threads
    finally:
        auth.close()


# -- many addresses flooding one key id ---------------------------------------------


def _flood(auth: PATAuth, token: str, addresses: int, per_address: int) -> int:
    """Forged secrets for ``token``'s key id from many addresses, concurrently; the number accepted."""
    return _flood_from(auth, token, [f"203.0.113.{i}" for i in range(addresses)], per_address)


def test_a_flood_from_50_addresses_runs_argon2_at_most_twice_failure_limit_times(store: CountingStore) -> None:
    hasher = SlowCountingHasher(delay=0.0)
    auth = _auth(store, hasher, failure_limit=10)
    owner = auth.manager.create("alice", "ci")
    try:
        auth.verify(owner.token, client_ip="198.51.100.7")  # the owner's address, recorded as a use
        auth._background().submit(lambda: None).result()
        assert store.get(owner.record.id).last_used_ips == ("198.51.100.7",)  # type: ignore[union-attr]
        auth.verify(owner.token, client_ip="198.51.100.7")  # a cached token is untouched by what follows
        hasher.verifications = 0

        assert _flood(auth, owner.token, addresses=50, per_address=40) == 0
        assert hasher.verifications <= 2 * auth.verifier.failure_limit
        assert hasher.verifications >= auth.verifier.failure_limit  # the flood was really checked

        assert auth.verify(owner.token, client_ip="198.51.100.7").user_id == "alice"  # cached: hot path
        auth.verifier.local.clear()  # now cold everywhere
        assert auth.verify(owner.token, client_ip="198.51.100.7").user_id == "alice"  # a known address
        auth.verifier.local.clear()
        with pytest.raises(InvalidToken) as info:  # a new address waits for the window to end
            auth.verify(owner.token, client_ip="192.0.2.55")
        assert info.value.reason == "throttled"
    finally:
        auth.close()


def test_a_token_limited_to_networks_refuses_other_addresses_before_argon2_and_uncounted(
    store: CountingStore,
) -> None:
    hasher = SlowCountingHasher(delay=0.0)
    auth = _auth(store, hasher, failure_limit=3)
    owner = auth.manager.create("alice", "ci", allowed_cidrs=["10.0.0.0/8"])
    try:
        auth.verify(owner.token, client_ip="10.1.2.3")
        auth._background().submit(lambda: None).result()  # the last-used write landed
        auth.verifier.local.clear()
        hasher.verifications = 0
        assert _flood(auth, owner.token, addresses=20, per_address=5) == 0
        assert hasher.verifications == 0  # every flooding address is outside 10/8: no argon2 at all
        assert auth.verify(owner.token, client_ip="10.1.2.3").user_id == "alice"  # nor any budget used
        auth.verifier.local.clear()
        # a flood from inside the network is bounded like any other
        assert _flood_from(auth, owner.token, [f"10.9.0.{i}" for i in range(20)], 5) == 0
        assert hasher.verifications <= 1 + 2 * 3
        assert auth.verify(owner.token, client_ip="10.1.2.3").user_id == "alice"  # a known address
    finally:
        auth.close()


def _flood_from(auth: PATAuth, token: str, addresses: list[str], per_address: int) -> int:
    forged = _forged(token, len(addresses) * per_address)

    async def one(i: int) -> bool:
        try:
            await auth.averify(forged[i], client_ip=addresses[i % len(addresses)])
        except InvalidToken:
            return False
        return True

    async def run() -> int:
        return sum(await asyncio.gather(*(one(i) for i in range(len(forged)))))

    return asyncio.run(run())


def test_key_failure_limit_is_an_option_checked_at_start_up(store: CountingStore) -> None:
    hasher = SlowCountingHasher(delay=0.0)
    auth = _auth(store, hasher, failure_limit=4)
    assert auth.verifier.key_failure_limit == 8
    auth.close()
    auth = _auth(store, hasher, failure_limit=4, key_failure_limit=5)
    assert auth.verifier.key_failure_limit == 5
    auth.close()
    with pytest.raises(ValueError, match="key_failure_limit"):
        _auth(store, hasher, key_failure_limit=0)
