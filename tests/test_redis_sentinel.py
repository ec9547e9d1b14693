"""Redis Sentinel: a primary, one replica and three sentinels on loopback,
started by the test (:mod:`redis_topologies`). The cache is reached through
a ``redis+sentinel://`` URL; the primary is SIGKILLed while two PATAuth
instances verify tokens in a loop and one of them revokes tokens.

Checked: verification keeps answering (from the store while Redis is
down), nothing but the documented errors, no wrong acceptance, revocations
made during the failover refused within the bound, the listeners back on
the new primary, and a revocation after the failover reaching another
process fast. Printed: the failover window (time the cache could not use
Redis) and its parts.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_load import Load, Prober
from redis_procs import make_auth, percentile, propagation_delays, spawn_verifier
from redis_topologies import SERVICE, SentinelSet, running_sentinels, wait_until

from pat_middleware import PATAuth
from pat_middleware.cache.redis import RedisCache
from pat_middleware.core.tokens import generate
from pat_middleware.redis.topology import SentinelTopology

pytestmark = [pytest.mark.redis, pytest.mark.slow]

PREFIX = "pat:"
#: revocation_poll: the revocation bound that does not depend on Redis.
POLL = 0.5
#: The bound: one poll interval plus one query (the feed's allowance).
BOUND = POLL + 1.0


@pytest.fixture
def sentinels() -> Iterator[SentinelSet]:
    yield from running_sentinels()


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tokens.db'}"


def _cache(auth: PATAuth) -> RedisCache:
    assert isinstance(auth.cache, RedisCache)
    return auth.cache


def test_sentinel_url_and_constructor(sentinels: SentinelSet, store_url: str) -> None:
    """``PATAuth.from_url(cache_url="redis+sentinel://...")`` and
    ``RedisCache.from_sentinel`` reach the primary and subscribe on it."""
    auth = make_auth(store_url, sentinels.url, PREFIX)
    assert isinstance(_cache(auth).clients.topology, SentinelTopology)
    new = auth.manager.create("alice", "ci", ["repo:read"])
    assert auth.verify(new.token).token_id == new.record.id
    wait_until(lambda: _cache(auth).subscribed, 5, "subscribed")
    with sentinels.primary.client() as primary:
        assert primary.exists(f"{PREFIX}{{{new.record.id}}}:e") == 1
        assert primary.execute_command("PUBSUB", "NUMSUB", f"{PREFIX}invalidate")[1] == 1

    other = RedisCache.from_sentinel([("127.0.0.1", s.port) for s in sentinels.sentinels], SERVICE, prefix=PREFIX)
    lookup = other.lookup(new.record.id, b"\0" * 32)
    assert lookup.entry is not None  # the entry the first cache wrote
    other.close()
    auth.close()


def test_primary_killed_under_load(sentinels: SentinelSet, store_url: str) -> None:
    """SIGKILL the primary while A and B verify and A revokes: see the module docstring."""
    auth_a = make_auth(store_url, sentinels.url, PREFIX, revocation_poll=POLL)  # verifies and revokes
    auth_b = make_auth(store_url, sentinels.url, PREFIX, revocation_poll=POLL)  # verifies
    try:
        _primary_killed_under_load(sentinels, store_url, auth_a, auth_b)
    finally:
        auth_a.close()
        auth_b.close()


def _primary_killed_under_load(sentinels: SentinelSet, store_url: str, auth_a: PATAuth, auth_b: PATAuth) -> None:
    valid = [auth_a.manager.create("alice", f"valid{i}", ["repo:read"]) for i in range(6)]
    doomed = [auth_a.manager.create("bob", f"doomed{i}", ["repo:read"]) for i in range(3)]
    old = auth_a.manager.create("carol", "old", ["repo:read"])
    target = auth_a.manager.create("dave", "target", ["repo:read"])
    wrong = [generate(key_id=target.record.id)[0], generate()[0]]  # wrong secret; unknown id
    live = [*valid, *doomed, old]
    for auth in (auth_a, auth_b):
        assert [auth.verify(n.token).token_id for n in live] == [n.record.id for n in live]
        wait_until(lambda auth=auth: _cache(auth).subscribed, 5, "subscribed")  # type: ignore[misc]
    auth_a.manager.revoke(old.record.id)
    first_primary = sentinels.master_address()
    assert first_primary is not None

    # A third process, without the store's feed: only the channel tells it of revocations.
    with spawn_verifier(store_url, sentinels.url, PREFIX, revocation_poll=None) as other:
        assert other.verify(valid[0].token) == ("ok", valid[0].record.id)  # starts its listener
        assert other.subscribed(wait=10.0)
        revoked: dict[str, float] = {}  # token -> when revoke() returned
        with Load({"a": auth_a, "b": auth_b}, [n.token for n in live] + wrong) as load, Prober(auth_b) as prober:
            time.sleep(0.3)
            killed_at = sentinels.node_at(first_primary[1]).kill()
            for offset, new in zip((0.1, 0.8, 1.6), doomed, strict=True):
                time.sleep(max(0.0, killed_at + offset - time.monotonic()))
                auth_a.manager.revoke(new.record.id)  # Redis is down or failing over
                revoked[new.token] = time.monotonic()
            wait_until(lambda: sentinels.master_address() not in (None, first_primary), 30, "failover", step=0.01)
            promoted = time.monotonic() - killed_at
            resubscribed: dict[str, float] = {}

            def both_back() -> bool:
                for name, auth in (("a", auth_a), ("b", auth_b)):
                    if name not in resubscribed and _cache(auth).subscribed:
                        resubscribed[name] = time.monotonic() - killed_at
                return len(resubscribed) == 2

            wait_until(both_back, 15, "both listeners back", step=0.002)
            wait_until(lambda: prober.recovered(killed_at), 15, "the cache answers again")
            time.sleep(max(0.0, max(revoked.values()) + BOUND + 0.3 - time.monotonic()))
        window = prober.window(killed_at)
        assert window is not None

        new_primary = sentinels.master_address()
        assert new_primary is not None and new_primary != first_primary
        assert other.subscribed(wait=10.0)
        with sentinels.node_at(new_primary[1]).client() as primary:
            # a, b and the other process listen on the new primary
            assert primary.execute_command("PUBSUB", "NUMSUB", f"{PREFIX}invalidate")[1] == 3
            # the revocations made while it was down were re-sent to it
            wait_until(lambda: not _cache(auth_a).pending_invalidations, 5, "pending invalidations re-sent")
            for new in doomed:
                assert primary.exists(f"{PREFIX}{{{new.record.id}}}:e") == 0
        # After the failover a revocation reaches the other process through the new primary.
        delays = [from_call for from_call, _ in propagation_delays(auth_a, other, trials=15)]

    outcomes = load.outcomes
    errors = [o for o in outcomes if o.kind == "error"]
    assert not errors, errors[:5]
    assert {o.kind for o in outcomes} <= {"ok", "invalid"}  # the store (SQLite) never failed
    # Every valid token accepted throughout, through both instances.
    for new in valid:
        assert {o.kind for o in load.of(new.token)} == {"ok"}
    # No wrong acceptance: wrong tokens never; the token revoked before the kill never after it.
    assert not [o for o in outcomes if o.token in wrong and o.kind == "ok"]
    assert not [o for o in load.of(old.token) if o.kind == "ok"]
    # Revocations during the failover: A refuses at once, B within the bound.
    late: list[float] = []
    for token, returned in revoked.items():
        assert not [o for o in load.of(token, "a") if o.kind == "ok" and o.started > returned]
        late.append(max((o.started - returned for o in load.of(token, "b") if o.kind == "ok"), default=-1.0))
        assert late[-1] < BOUND, f"B accepted a revoked token {late[-1]:.3f} s after the revocation"
        assert [o for o in load.of(token, "b") if o.started > returned + BOUND and o.kind == "invalid"]
    during = [o for o in outcomes if window[0] <= o.started < window[1]]
    assert len(during) > 50, "the load did not run through the failover"

    down, up = window[0] - killed_at, window[1] - killed_at
    print(
        f"\nsentinel failover: the cache could not use Redis from +{down * 1e3:.0f} ms to +{up * 1e3:.0f} ms "
        f"after SIGKILL (window {up:.2f} s); sentinels named the new primary at +{promoted:.2f} s; listeners "
        f"resubscribed at +{resubscribed['a']:.2f} s (a), +{resubscribed['b']:.2f} s (b); {len(during)} "
        f"verifications in the window, all answered; B's last acceptance of a token revoked during the "
        f"failover: {max(late) * 1e3:.0f} ms after revoke() returned (bound {BOUND:.1f} s); propagation "
        f"after the failover: median {statistics.median(delays) * 1e3:.1f} ms, max {max(delays) * 1e3:.1f} ms"
    )
    assert percentile(delays, 0.9) < 0.1
    assert max(delays) < 0.5
