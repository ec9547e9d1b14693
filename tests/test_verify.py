"""The verification flow: cache, expiry, revocation, throttling, last-used, rehash."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from pat_middleware import (
    Argon2Hasher,
    HMACHasher,
    InvalidToken,
    MemoryStore,
    PATAuth,
    Policy,
    ScopeRules,
    StoreUnavailable,
)
from pat_middleware.events import Event
from pat_middleware.models import TokenRecord
from tests.helpers import FAST_ARGON2, FakeClock


class CountingHasher:
    """The real fast argon2 hasher, counting how often it runs."""

    def __init__(self, inner: Argon2Hasher = FAST_ARGON2) -> None:
        self.inner = inner
        self.verifications = 0
        self.threads: set[str] = set()

    def hash(self, secret: str) -> str:
        return self.inner.hash(secret)

    def verify(self, stored: str, secret: str) -> bool:
        self.verifications += 1
        self.threads.add(threading.current_thread().name)
        return self.inner.verify(stored, secret)

    def needs_rehash(self, stored: str) -> bool:
        return self.inner.needs_rehash(stored)


class OutageStore(MemoryStore):
    """A MemoryStore whose reads fail while ``down`` is set (a simulated outage of the store)."""

    down = False

    def get(self, token_id: str) -> TokenRecord | None:
        if self.down:
            raise ConnectionError("store is down")
        return super().get(token_id)


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher()


@pytest.fixture
def events() -> list[Event]:
    return []


@pytest.fixture
def auth(clock: FakeClock, hasher: CountingHasher, events: list[Event]) -> Iterator[PATAuth]:
    a = PATAuth(MemoryStore(), hasher=hasher, clock=clock, on_event=events.append, last_used_interval=60)
    yield a
    a.close()


def test_valid_token_gives_principal(auth: PATAuth) -> None:
    new = auth.manager.create("alice", "ci", ["repo:read"], expires_in=timedelta(days=1))
    principal = auth.verify(new.token)
    assert principal.user_id == "alice"
    assert principal.token_id == new.record.id
    assert principal.token_name == "ci"
    assert principal.scopes == {"repo:read"}
    assert principal.expires_at == new.record.expires_at


def test_second_verify_is_a_cache_hit_without_argon2(auth: PATAuth, hasher: CountingHasher) -> None:
    token = auth.manager.create("alice", "ci").token
    auth.verify(token)
    assert hasher.verifications == 1
    for _ in range(100):
        auth.verify(token)
    assert hasher.verifications == 1


def test_unknown_wrong_and_malformed(auth: PATAuth) -> None:
    token = auth.manager.create("alice", "ci").token
    from pat_middleware.tokens import checksum, generate

    unknown, _ = generate()
    head = token[: -6 - 32] + "x" * 32
    wrong = head + checksum(head)
    cases = {unknown: "unknown", wrong: "bad_secret", token[:-1] + "!": "malformed", "": "malformed"}
    for bad, reason in cases.items():
        with pytest.raises(InvalidToken) as info:
            auth.verify(bad)
        assert info.value.reason == reason
        assert bad not in str(info.value) or not bad
    assert auth.verify(token).user_id == "alice"


def test_wrong_secret_after_a_cached_hit_is_still_rejected(auth: PATAuth) -> None:
    from pat_middleware.tokens import checksum

    token = auth.manager.create("alice", "ci").token
    auth.verify(token)
    head = token[: -6 - 32] + "y" * 32
    with pytest.raises(InvalidToken) as info:
        auth.verify(head + checksum(head))
    assert info.value.reason == "bad_secret"


def test_expiry_at_the_exact_boundary(auth: PATAuth, clock: FakeClock) -> None:
    new = auth.manager.create("alice", "ci", expires_in=timedelta(hours=1))
    auth.verify(new.token)
    clock.advance(timedelta(hours=1) - timedelta(microseconds=1))
    assert auth.verify(new.token).user_id == "alice"
    clock.advance(timedelta(microseconds=1))
    with pytest.raises(InvalidToken) as info:
        auth.verify(new.token)
    assert info.value.reason == "expired"


def test_expired_token_is_rejected_cold_too(auth: PATAuth, clock: FakeClock) -> None:
    new = auth.manager.create("alice", "ci", expires_in=timedelta(minutes=5))
    clock.advance(timedelta(minutes=5))
    with pytest.raises(InvalidToken) as info:
        auth.verify(new.token)
    assert info.value.reason == "expired"


def test_revoke_takes_effect_immediately_in_process(auth: PATAuth) -> None:
    new = auth.manager.create("alice", "ci")
    auth.verify(new.token)
    auth.manager.revoke(new.record.id)
    with pytest.raises(InvalidToken) as info:
        auth.verify(new.token)
    assert info.value.reason == "revoked"


def test_without_a_feed_another_process_revoking_is_seen_within_local_ttl(clock: FakeClock) -> None:
    store = MemoryStore()
    ours = PATAuth(store, hasher=FAST_ARGON2, clock=clock, local_ttl=5.0, revocation_poll=None)
    theirs = PATAuth(store, hasher=FAST_ARGON2, clock=clock)  # stands for another process
    new = ours.manager.create("alice", "ci")
    ours.verify(new.token)
    theirs.manager.revoke(new.record.id)
    assert ours.verify(new.token)  # still cached: the documented bound
    clock.advance(5.0)
    with pytest.raises(InvalidToken):
        ours.verify(new.token)


def test_stale_entry_is_revalidated_without_argon2(auth: PATAuth, clock: FakeClock, hasher: CountingHasher) -> None:
    token = auth.manager.create("alice", "ci").token
    auth.verify(token)
    clock.advance(6.0)  # past local_ttl
    auth.verify(token)
    assert hasher.verifications == 1


def test_scope_rules_expand_at_verification(clock: FakeClock) -> None:
    auth = PATAuth(
        MemoryStore(), hasher=FAST_ARGON2, clock=clock, scope_rules=ScopeRules({"repo": ["repo:read", "repo:write"]})
    )
    principal = auth.verify(auth.manager.create("alice", "ci", ["repo"]).token)
    assert principal.scopes == {"repo", "repo:read", "repo:write"}
    assert principal.has_scopes(["repo:write"])


def test_cidr_allowlist(auth: PATAuth) -> None:
    token = auth.manager.create("alice", "ci", allowed_cidrs=["10.0.0.0/8", "2001:db8::/32"]).token
    assert auth.verify(token, client_ip="10.1.2.3")
    assert auth.verify(token, client_ip="2001:db8::1")
    assert auth.verify(token, client_ip="::ffff:10.9.9.9")
    for ip in ("192.168.1.1", None, "not-an-ip"):
        with pytest.raises(InvalidToken) as info:
            auth.verify(token, client_ip=ip)
        assert info.value.reason == "ip_not_allowed"


def test_wrong_secrets_are_negative_cached_and_throttled(clock: FakeClock, hasher: CountingHasher) -> None:
    auth = PATAuth(MemoryStore(), hasher=hasher, clock=clock, failure_limit=3, failure_window=60)
    token = auth.manager.create("alice", "ci").token
    auth.verify(token)  # the owner's token is cached before the attack
    wrong = _forged(token, 10)
    reasons = []
    for bad in wrong:
        with pytest.raises(InvalidToken) as info:
            auth.verify(bad)
        reasons.append(info.value.reason)
    assert reasons[:3] == ["bad_secret"] * 3
    assert set(reasons[3:]) == {"throttled"}
    assert hasher.verifications == 1 + 3  # the flood did not run argon2
    with pytest.raises(InvalidToken):
        auth.verify(wrong[0])  # same wrong token again: negative cache
    assert hasher.verifications == 4
    assert auth.verify(token).user_id == "alice"  # the cached owner is unaffected
    clock.advance(61)
    with pytest.raises(InvalidToken) as info:
        auth.verify(wrong[5])
    assert info.value.reason == "bad_secret"  # window over: verified again


def test_last_used_is_debounced(auth: PATAuth, clock: FakeClock) -> None:
    new = auth.manager.create("alice", "ci")
    for _ in range(50):
        auth.verify(new.token, client_ip="10.0.0.1")
    auth._background.shutdown()  # waits for the deferred write
    record = auth.manager.get(new.record.id)
    assert record.last_used_at == clock.datetime
    assert record.last_used_ips == ("10.0.0.1",)
    first = record.last_used_at
    clock.advance(30)
    auth.verify(new.token, client_ip="10.0.0.1")
    auth._background.shutdown()
    assert auth.manager.get(new.record.id).last_used_at == first  # inside the interval: no write
    clock.advance(31)
    auth.verify(new.token, client_ip="10.0.0.2")
    auth._background.shutdown()
    record = auth.manager.get(new.record.id)
    assert record.last_used_at == clock.datetime
    assert record.last_used_ips == ("10.0.0.2", "10.0.0.1")


def test_rehash_on_use_when_parameters_rise(clock: FakeClock) -> None:
    store = MemoryStore()
    weak = PATAuth(store, hasher=Argon2Hasher(time_cost=1, memory_cost=8), clock=clock)
    new = weak.manager.create("alice", "ci")
    strong_hasher = Argon2Hasher(time_cost=2, memory_cost=16)
    strong = PATAuth(store, hasher=strong_hasher, clock=clock)
    strong.verify(new.token)
    stored = store.get(new.record.id)
    assert stored is not None
    assert "m=16,t=2" in stored.hash
    assert strong_hasher.verify(stored.hash, new.token[4 + 12 : 4 + 44])


def test_hmac_hasher_works_end_to_end(clock: FakeClock) -> None:
    auth = PATAuth(MemoryStore(), hasher=HMACHasher(b"k" * 32), clock=clock)
    new = auth.manager.create("alice", "ci")
    assert new.record.hash.startswith("$hmac-sha256$")
    assert auth.verify(new.token).user_id == "alice"


def test_store_outage_is_store_unavailable_never_a_pass(clock: FakeClock) -> None:
    store = OutageStore()
    auth = PATAuth(store, hasher=FAST_ARGON2, clock=clock)
    token = auth.manager.create("alice", "ci").token
    store.down = True
    with pytest.raises(StoreUnavailable):
        auth.verify(token)
    store.down = False
    assert auth.verify(token)


def test_events_never_contain_the_token(auth: PATAuth, events: list[Event]) -> None:
    new = auth.manager.create("alice", "ci")
    auth.verify(new.token)
    with pytest.raises(InvalidToken):
        auth.verify(new.token[:-1] + ("x" if new.token[-1] != "x" else "y"))
    kinds = [e.kind for e in events]
    assert kinds[:2] == ["created", "verified"]
    assert events[-1].kind == "failed"
    assert events[-1].reason == "malformed"
    assert all(new.token not in repr(e) and new.token[16:40] not in repr(e) for e in events)


def test_async_cold_verify_runs_argon2_off_the_event_loop(auth: PATAuth, hasher: CountingHasher) -> None:
    token = auth.manager.create("alice", "ci").token

    async def main() -> None:
        loop_thread = threading.current_thread().name
        principal = await auth.averify(token)
        assert principal.user_id == "alice"
        assert loop_thread not in hasher.threads
        assert all(name.startswith("pat-hash") for name in hasher.threads)

    asyncio.run(main())


def test_policy_controls_default_expiry(clock: FakeClock) -> None:
    auth = PATAuth(MemoryStore(), hasher=FAST_ARGON2, clock=clock, policy=Policy(default_lifetime=timedelta(days=7)))
    record = auth.manager.create("alice", "ci").record
    assert record.expires_at == clock.datetime + timedelta(days=7)


def test_cached_bearer_fast_path(auth: PATAuth) -> None:
    token = auth.manager.create("alice", "ci").token
    verifier = auth.verifier
    assert verifier.cached_bearer(f"Bearer {token}") is None  # not verified yet: full path
    auth.verify(token)
    for scheme in ("Bearer", "bearer", "BEARER"):
        principal = verifier.cached_bearer(f"{scheme} {token}")
        assert principal is not None
        assert principal.user_id == "alice"
    for other in (f"Bearer  {token}", f"Basic {token}", f"Bearer {token} ", f"Bearer {token},Bearer {token}", "", "B"):
        assert verifier.cached_bearer(other) is None
    assert verifier.cached_bearer(f"bEaReR {token}") is None  # another spelling: the full path decides


def test_cached_header_fast_path_on_raw_bytes(auth: PATAuth) -> None:
    token = auth.manager.create("alice", "ci").token
    verifier = auth.verifier
    assert verifier.cached_header(f"Bearer {token}".encode()) is None  # not verified yet
    auth.verify(token)
    for scheme in (b"Bearer", b"bearer", b"BEARER"):
        principal = verifier.cached_header(scheme + b" " + token.encode())
        assert principal is not None and principal.user_id == "alice"
    odd = token[:-1].encode() + b"\xe9"  # same length, a latin-1 byte: no hit, no error
    for other in (
        b"Bearer  " + token.encode(),
        b"Basic " + token.encode(),
        b"Bearer " + odd,
        b"Bearer " + token.encode() + b" ",
        b"bEaReR " + token.encode(),
        b"Bearer " + token[:20].encode() + b"\xff" * 12 + token[32:].encode(),
        b"",
    ):
        assert verifier.cached_header(other) is None


def test_the_hot_path_digest_is_sha256() -> None:
    import hashlib

    from pat_middleware.core import digest_of, sha256

    assert sha256(b"pat_token").digest() == hashlib.sha256(b"pat_token").digest() == digest_of("pat_token")


def test_lost_channel_marks_entries_stale_without_rehashing(
    auth: PATAuth, clock: FakeClock, hasher: CountingHasher
) -> None:
    new = auth.manager.create("alice", "ci")
    auth.verify(new.token)
    generation = auth.verifier.local.generation
    auth.verifier.local.expire_all()
    assert auth.verifier.cached(new.token) is None  # stale: must go to the store
    assert auth.verify(new.token).user_id == "alice"
    assert hasher.verifications == 1  # revalidated by a store read, not argon2
    auth.store.revoke(new.record.id, clock.datetime)  # behind the cache's back
    auth.verifier.local.expire_all()
    with pytest.raises(InvalidToken):
        auth.verify(new.token)
    # an entry read before a flush is kept stale, never fresh
    entry = auth.verifier.entry_for(auth.store.get(new.record.id), b"x" * 32)  # type: ignore[arg-type]
    auth.verifier.local.put(entry, clock.now + 100, generation)
    assert auth.verifier.local.get(new.record.id) == (entry, 0.0)


def test_invalidation_during_a_cold_verify_wins(auth: PATAuth) -> None:
    new = auth.manager.create("alice", "ci")
    record = auth.store.get(new.record.id)
    assert record is not None
    generation = auth.verifier.local.generation
    auth.verifier.local.invalidate([new.record.id])  # a revocation lands mid-verification
    entry = auth.verifier.entry_for(record, b"x" * 32)
    assert not auth.verifier.local.put(entry, 1e12, generation)
    assert auth.verifier.local.get(new.record.id) is None


def test_a_flood_from_one_address_does_not_lock_the_owner_out(clock: FakeClock) -> None:
    from pat_middleware.tokens import checksum

    store = MemoryStore()
    attacked = PATAuth(store, hasher=FAST_ARGON2, clock=clock, failure_limit=3)
    token = attacked.manager.create("alice", "ci").token
    for i in range(10):  # the key id is public: anyone can aim wrong secrets at it
        head = token[: -6 - 32] + f"{i:032d}"
        with pytest.raises(InvalidToken):
            attacked.verify(head + checksum(head), client_ip="203.0.113.9")
    with pytest.raises(InvalidToken) as info:
        attacked.verify(token, client_ip="203.0.113.9")  # the flooding address is throttled
    assert info.value.reason == "throttled"
    # the owner, cold (nothing cached for them), from their own address: verified
    assert attacked.verify(token, client_ip="198.51.100.7").user_id == "alice"


def test_strange_strings_never_escape_as_other_errors(auth: PATAuth) -> None:
    token = auth.manager.create("alice", "ci").token
    auth.verify(token)  # the key id is cached: the hot path sees these first
    for odd in (token[:-1] + "\udc80", token[:20] + "\x00" + token[21:], token[:-1] + "é"):
        assert len(odd) == len(token)
        with pytest.raises(InvalidToken) as info:
            auth.verify(odd)
        assert info.value.reason == "malformed"


class _CountingStore(MemoryStore):
    """A real MemoryStore that counts the calls made to it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __getattribute__(self, name: str) -> object:
        value = super().__getattribute__(name)
        if callable(value) and not name.startswith("_") and name != "calls":
            super().__getattribute__("calls").append(name)
        return value


def test_the_hot_path_does_no_io_starts_no_thread_and_runs_no_argon2(hasher: CountingHasher) -> None:
    store = _CountingStore()
    auth = PATAuth(store, hasher=hasher)
    try:
        token = auth.manager.create("alice", "ci").token
        auth.verify(token)  # cold: the store is read once, argon2 runs once
        auth.verify(token)  # the first hit schedules the debounced last-used write
        auth._background().submit(lambda: None).result()  # let that write finish
        assert "get" in store.calls  # the counter sees the cold path's read
        store.calls.clear()
        threads, verifications = threading.active_count(), hasher.verifications
        for _ in range(1000):
            assert auth.verify(token).user_id == "alice"
            assert auth.verifier.cached_bearer(f"Bearer {token}") is not None
        assert store.calls == []
        assert hasher.verifications == verifications
        assert threading.active_count() == threads
    finally:
        auth.close()


def _forged(token: str, count: int) -> list[str]:
    """Tokens with ``token``'s key id, other secrets and valid checksums."""
    from pat_middleware.tokens import checksum

    heads = [token[: -6 - 32] + f"{i:032d}" for i in range(count)]
    return [head + checksum(head) for head in heads]


def test_a_concurrent_async_flood_of_wrong_secrets_runs_argon2_at_most_failure_limit_times(
    hasher: CountingHasher,
) -> None:
    """All the tasks pass the failure count before any failure is recorded; the
    secrets being checked right now count too."""
    auth = PATAuth(MemoryStore(), hasher=hasher, failure_limit=10)
    token = auth.manager.create("alice", "ci").token

    async def flood() -> list[str]:
        async def attempt(bad: str) -> str:
            try:
                await auth.averify(bad, client_ip="203.0.113.6")
            except InvalidToken as exc:
                return exc.reason
            return "accepted"

        return await asyncio.gather(*(attempt(bad) for bad in _forged(token, 100)))

    try:
        reasons = asyncio.run(flood())
        assert reasons.count("bad_secret") <= 10 and "accepted" not in reasons
        assert set(reasons) == {"bad_secret", "throttled"}
        assert hasher.verifications <= 10
    finally:
        auth.close()


def test_a_concurrent_threaded_flood_of_wrong_secrets_is_bounded_too(hasher: CountingHasher) -> None:
    auth = PATAuth(MemoryStore(), hasher=hasher, failure_limit=10)
    token = auth.manager.create("alice", "ci").token
    forged = _forged(token, 96)
    start = threading.Barrier(32)

    def attempts(chunk: list[str]) -> None:
        start.wait()
        for bad in chunk:
            with pytest.raises(InvalidToken):
                auth.verify(bad, client_ip="203.0.113.6")

    threads = [threading.Thread(target=attempts, args=(forged[i::32],)) for i in range(32)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert hasher.verifications <= 10
    finally:
        auth.close()


def test_a_burst_of_one_real_uncached_token_is_never_throttled(hasher: CountingHasher) -> None:
    auth = PATAuth(MemoryStore(), hasher=hasher, failure_limit=3)
    token = auth.manager.create("alice", "ci").token

    async def burst() -> list[str]:
        return [p.user_id for p in await asyncio.gather(*(auth.averify(token) for _ in range(50)))]

    try:
        assert asyncio.run(burst()) == ["alice"] * 50
    finally:
        auth.close()


@pytest.mark.parametrize(
    ("cidr", "stored"),
    [("::ffff:10.0.0.0/104", "10.0.0.0/8"), ("::ffff:0:0/96", "0.0.0.0/0"), ("10.0.0.0/8", "10.0.0.0/8")],
)
def test_ipv4_mapped_allowlists_match_ipv4_clients_of_either_form(cidr: str, stored: str) -> None:
    auth = PATAuth(MemoryStore(), hasher=FAST_ARGON2)
    try:
        new = auth.manager.create("alice", "office", allowed_cidrs=[cidr])
        assert new.record.allowed_cidrs == (stored,)
        for client in ("10.1.2.3", "::ffff:10.1.2.3"):
            assert auth.verify(new.token, client_ip=client).user_id == "alice"
        with pytest.raises(InvalidToken):
            auth.verify(new.token, client_ip="2001:db8::1")
    finally:
        auth.close()


def test_an_ipv6_allowlist_also_sees_a_mapped_client_as_ipv6() -> None:
    auth = PATAuth(MemoryStore(), hasher=FAST_ARGON2)
    try:
        new = auth.manager.create("alice", "any v6", allowed_cidrs=["::/0"])
        assert auth.verify(new.token, client_ip="::ffff:10.1.2.3").user_id == "alice"
        with pytest.raises(InvalidToken):
            auth.verify(new.token, client_ip="10.1.2.3")  # a plain IPv4 client is not in ::/0
    finally:
        auth.close()
