"""The revocation feed: the bound on revocation that does not depend on Redis.

Here with the MemoryStore and a fake clock, one poll at a time
(``auth.feed.poll_once()``); the stores' side is in ``tests/store_contract.py``
and the real processes in the reliability suites.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import pytest

from pat_middleware import InvalidToken, MemoryStore, PATAuth, StoreUnavailable
from pat_middleware.core.feed import FeedState
from pat_middleware.core.models import TokenRecord
from tests.helpers import FAST_ARGON2, FakeClock


class CountingStore(MemoryStore):
    """A MemoryStore that counts reads and can be taken down."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.polls = 0
        self.down = False

    def get(self, token_id: str) -> TokenRecord | None:
        self.reads += 1
        if self.down:
            raise ConnectionError("store is down")
        return super().get(token_id)

    def changes_since(self, since: datetime) -> list[tuple[str, datetime]]:
        self.polls += 1
        if self.down:
            raise ConnectionError("store is down")
        return super().changes_since(since)


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC))  # the stores stamp changes with the real clock


def _pair(store: CountingStore, clock: FakeClock) -> tuple[PATAuth, PATAuth]:
    """Two engines on one store: ``ours`` verifies, ``theirs`` stands for another process."""
    ours = PATAuth(store, hasher=FAST_ARGON2, clock=clock, revocation_poll=5.0)
    theirs = PATAuth(store, hasher=FAST_ARGON2, clock=clock, revocation_poll=None)
    return ours, theirs


def test_a_revocation_in_another_process_is_seen_at_the_next_poll(store: CountingStore, clock: FakeClock) -> None:
    ours, theirs = _pair(store, clock)
    new = theirs.manager.create("alice", "ci")
    assert ours.verify(new.token).user_id == "alice"
    assert ours.feed is not None
    ours.feed.poll_once()
    theirs.manager.revoke(new.record.id)  # no Redis: nothing tells ours but the feed
    assert ours.verify(new.token).user_id == "alice"  # still cached until the next poll
    assert ours.feed.poll_once() == [new.record.id]
    with pytest.raises(InvalidToken) as info:
        ours.verify(new.token)
    assert info.value.reason == "revoked"


@pytest.mark.parametrize(
    "change",
    [
        lambda m, i: m.update(i, expires_in=timedelta(hours=1)),
        lambda m, i: m.rename(i, "renamed"),
        lambda m, i: m.update(i, allowed_cidrs=["10.0.0.0/8"]),
        lambda m, i: m.rotate(i),
        lambda m, i: m.revoke_all("alice"),
    ],
    ids=["expiry", "rename", "networks", "rotate", "revoke_all"],
)
def test_every_change_of_validity_reaches_the_other_process(store: CountingStore, clock: FakeClock, change) -> None:
    ours, theirs = _pair(store, clock)
    new = theirs.manager.create("alice", "ci")
    ours.verify(new.token)
    ours.feed.poll_once()  # type: ignore[union-attr]
    change(theirs.manager, new.record.id)
    assert ours.feed.poll_once() == [new.record.id]  # type: ignore[union-attr]
    assert ours.verifier.local.get(new.record.id) is None


def test_a_change_is_acted_on_once_though_later_polls_report_it_again(store: CountingStore, clock: FakeClock) -> None:
    ours, theirs = _pair(store, clock)
    new = theirs.manager.create("alice", "ci")
    theirs.manager.rename(new.record.id, "other")
    assert ours.feed.poll_once() == [new.record.id]  # type: ignore[union-attr]
    ours.verify(new.token)
    clock.advance(5.0)
    assert ours.feed.poll_once() == []  # type: ignore[union-attr] # inside the lookback, already seen
    assert ours.verifier.local.get(new.record.id) is not None  # the entry was not dropped again


def test_with_a_feed_local_entries_are_not_reread_every_local_ttl(store: CountingStore, clock: FakeClock) -> None:
    ours, theirs = _pair(store, clock)
    tokens = [theirs.manager.create("alice", f"t{i}").token for i in range(50)]
    for token in tokens:
        ours.verify(token)
    store.reads = 0
    for _ in range(60):  # one minute, every token used every second, a poll every 5 s
        clock.advance(1.0)
        if int(clock.now) % 5 == 0:
            ours.feed.poll_once()  # type: ignore[union-attr]
        for token in tokens:
            ours.verify(token)
    assert store.reads == 0  # without the feed: 50 tokens / local_ttl 5 s = 600 reads


def test_when_polls_fail_entries_go_stale_at_the_bound_and_the_store_decides(
    store: CountingStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    ours, theirs = _pair(store, clock)
    new = theirs.manager.create("alice", "ci")
    ours.verify(new.token)
    ours.feed.poll_once()  # type: ignore[union-attr]
    store.down = True
    with pytest.raises(StoreUnavailable):
        ours.feed.poll_once()  # type: ignore[union-attr]
    clock.advance(5.9)  # inside revocation_poll + the one-second allowance: still trusted
    assert ours.verify(new.token).user_id == "alice"
    clock.advance(0.2)  # past it: nothing tells this process about revocations any more
    with pytest.raises(StoreUnavailable):
        ours.verify(new.token)  # revalidated against a store that is down: 503, never a pass
    store.down = False
    assert ours.verify(new.token).user_id == "alice"  # the store answers: no argon2 (same verifier)
    ours.feed.poll_once()  # type: ignore[union-attr]
    assert ours.verifier.trusted_until > clock.now + 5


def test_the_feed_thread_polls_logs_an_outage_once_and_its_end(caplog: pytest.LogCaptureFixture) -> None:
    store = CountingStore()
    auth = PATAuth(store, hasher=FAST_ARGON2, revocation_poll=0.05)
    try:
        token = auth.manager.create("alice", "ci").token
        auth.verify(token)  # the first cold verification starts the feed
        deadline = time.monotonic() + 5
        while store.polls < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.polls >= 3
        with caplog.at_level(logging.WARNING, "pat_middleware"):
            store.down = True
            time.sleep(0.3)
            store.down = False
            time.sleep(0.3)
        messages = [r.getMessage() for r in caplog.records if "revocation feed" in r.getMessage()]
        assert len(messages) == 2, messages
        assert "could not be polled" in messages[0] and "again" in messages[1]
    finally:
        auth.close()


def test_feed_state_horizon_and_deadline() -> None:
    state = FeedState(interval=5.0, lookback=30.0, query_allowance=1.0, now=1000.0)
    assert state.since().timestamp() == 970.0
    assert state.trusted_until == 1006.0
    stamp = datetime.fromtimestamp(999.0, UTC)
    assert state.succeeded(1005.0, [("a", stamp), ("a", stamp), ("b", stamp)]) == ["a", "b"]
    assert state.since().timestamp() == 975.0  # the last success's start, minus the lookback
    assert state.trusted_until == 1011.0
    assert state.succeeded(1010.0, [("a", stamp)]) == []  # seen
    later = datetime.fromtimestamp(1009.0, UTC)
    assert state.succeeded(1015.0, [("a", later)]) == ["a"]  # changed again


def test_revocation_poll_is_checked_at_start_up() -> None:
    with pytest.raises(ValueError, match="revocation_poll"):
        PATAuth(MemoryStore(), revocation_poll=0)
    with pytest.raises(ValueError, match="revocation_poll"):
        PATAuth(MemoryStore(), revocation_poll=float("inf"))
    assert PATAuth(MemoryStore(), revocation_poll=None).feed is None
