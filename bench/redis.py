"""What the Redis cache costs, and how fast a revocation reaches another process.

Run: ``python bench/redis.py`` (needs the Redis at ``--redis-url``, default
``$PAT_TEST_REDIS_URL`` or redis://127.0.0.1:6379/0; keys go under a
prefix unique to the run and are deleted afterwards).

Latency, timed interleaved (each round times every case once, as the median
of ``--calls`` individually timed calls; the median of the rounds is
printed), all with an HMAC hasher and a SQLite store file:

* ``auth.verify``, local-cache hit: no I/O at all;
* ``auth.verify``, local miss + Redis hit: the local entry is dropped before
  each call, so every call is one Redis round trip (``MGET``) and decoding
  the shared entry; the store is not read;
* ``RedisCache.lookup`` alone (the Redis round trip of the case above);
* ``redis-py GET`` of one key with a default client: the reference. Target:
  local miss + Redis hit <= 1.3 x GET.

Propagation: a second OS process verifies a token in a loop from its local
cache (``--pause`` seconds between calls, standing for a request's own I/O);
this process revokes it through ``auth.manager.revoke``. Printed: median and
p99 of the time from the revoke call, and from its return, to the other
process's first rejection, over ``--trials`` tokens. Target: p99 ≤ 5 ms.
"""

from __future__ import annotations

import os
import sys

# This file is named redis.py: when run as a script its directory comes first
# on sys.path and would shadow the redis package. Drop it, and reach the
# shared two-process harness in tests/.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
sys.path.insert(0, os.path.join(os.path.dirname(_HERE), "tests"))

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import redis  # noqa: E402
from redis_procs import make_auth, percentile, propagation_delays, spawn_verifier  # noqa: E402

from pat_middleware.cache.redis import RedisCache  # noqa: E402


def per_call_us(fn: Callable[[], object], n: int) -> float:
    """Median µs of ``n`` calls, each timed alone: robust to a busy machine,
    where a mean would mostly measure the scheduler."""
    times = []
    clock = time.perf_counter
    for _ in range(n):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times) * 1e6


def latency(store_url: str, redis_url: str, prefix: str, rounds: int, calls: int) -> None:
    auth = make_auth(store_url, redis_url, prefix)
    cache = auth.cache
    assert isinstance(cache, RedisCache)
    new = auth.manager.create("bench", "bench", ["repo:read"])
    token, token_id = new.token, new.record.id
    auth.verify(token)  # fills the local cache and Redis
    local = auth.verifier.local
    digest = local.get(token_id)[0].digest  # type: ignore[index]
    raw = redis.Redis.from_url(redis_url)
    raw_key = cache.plans.key(token_id, "e")
    assert raw.get(raw_key) is not None

    def redis_hit() -> object:
        local.invalidate([token_id])  # drop the local entry: the next call asks Redis
        return auth.verify(token)

    cases: dict[str, Callable[[], object]] = {
        "auth.verify: local-cache hit": lambda: auth.verify(token),
        "auth.verify: local miss + Redis hit": redis_hit,
        "RedisCache.lookup": lambda: cache.lookup(token_id, digest),
        "redis-py GET (reference)": lambda: raw.get(raw_key),
    }
    for fn in cases.values():  # warm up connections and scripts
        per_call_us(fn, 100)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            samples[name].append(per_call_us(fn, calls))
    base = statistics.median(samples["redis-py GET (reference)"])
    print(f"{'case':40} {'µs/call':>10} {'x GET':>8}")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"{name:40} {median:10.2f} {median / base:8.2f}")
    raw.close()
    auth.close()


def propagation(store_url: str, redis_url: str, prefix: str, trials: int, pause: float) -> None:
    auth = make_auth(store_url, redis_url, prefix)
    with spawn_verifier(store_url, redis_url, prefix) as other:
        propagation_delays(auth, other, 10, pause)  # warm up
        measured = propagation_delays(auth, other, trials, pause)
    auth.close()
    print(f"\nrevocation propagation to another process, {trials} trials (pause {pause * 1e6:.0f} µs)")
    print(f"{'measured from':40} {'median ms':>10} {'p99 ms':>8} {'max ms':>8}")
    for label, values in (
        ("revoke() called", [a for a, _ in measured]),
        ("revoke() returned", [b for _, b in measured]),
    ):
        print(
            f"{label:40} {statistics.median(values) * 1e3:10.2f} "
            f"{percentile(values, 0.99) * 1e3:8.2f} {max(values) * 1e3:8.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", default=os.environ.get("PAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=5000, help="calls per round and case")
    parser.add_argument("--trials", type=int, default=500, help="revocations timed")
    parser.add_argument("--pause", type=float, default=0.0001, help="seconds between the other's verifications")
    args = parser.parse_args()

    prefix = f"pat-bench:{uuid.uuid4().hex[:8]}:"
    with tempfile.TemporaryDirectory() as tmp:
        store_url = f"sqlite:///{Path(tmp) / 'tokens.db'}"
        try:
            latency(store_url, args.redis_url, prefix, args.rounds, args.calls)
            propagation(store_url, args.redis_url, prefix, args.trials, args.pause)
        finally:
            with redis.Redis.from_url(args.redis_url) as client:
                keys = list(client.scan_iter(match=prefix + "*", count=1000))
                if keys:
                    client.delete(*keys)


if __name__ == "__main__":
    main()
