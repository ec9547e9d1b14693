"""Metrics through the OpenTelemetry metrics API (``pip install "pat-middleware[metrics]"``).

Without ``opentelemetry-api`` installed nothing is registered and nothing is
paid beyond the verifier's plain integer counts. With it, every ``PATAuth``
registers its instruments on the global meter provider (or the one given as
``PATAuth(meter_provider=...)``); with no SDK configured the API's provider
is a no-op. Counts are read when the exporter collects, so the hot path pays
one integer increment:

=================================  =====================================================
``pat.verifications``              accepted requests by ``path`` (``local``, ``shared``,
                                   ``store``) and refusals by ``reason`` (counter)
``pat.throttled``                  refusals for too many failed attempts (counter)
``pat.argon2.runs``                argon2 verifications (counter)
``pat.argon2.duration``            their seconds (histogram)
``pat.store.duration``             seconds per store call (histogram)
``pat.store.errors``               failed store calls (counter)
``pat.cache.duration``             seconds per Redis round trip of the cache (histogram)
``pat.cache.errors``               failed Redis cache calls (counter)
``pat.local_cache.size``           tokens in this process's cache (gauge)
``pat.revocation_feed.lag``        seconds since the change feed last answered (gauge)
=================================  =====================================================
"""

from __future__ import annotations

import importlib
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from pat_middleware.core.feed import RevocationFeed
from pat_middleware.core.verifier import Verifier

__all__ = ["instrument"]

NAME = "pat_middleware"


def instrument(verifier: Verifier, feed: RevocationFeed | None = None, meter_provider: Any = None) -> bool:
    """Register the instruments of a ``PATAuth``'s verifier (and change feed);
    ``False`` when OpenTelemetry is not installed.

    The callbacks hold the verifier weakly: a dropped ``PATAuth`` stops reporting.
    """
    try:
        otel = importlib.import_module("opentelemetry.metrics")
    except ImportError:
        return False
    provider = meter_provider if meter_provider is not None else otel.get_meter_provider()
    meter = provider.get_meter(NAME)
    ref = weakref.ref(verifier)
    feed_ref = None if feed is None else weakref.ref(feed)
    observation = otel.Observation

    def observe(read: Callable[[Verifier], Iterable[tuple[float, dict[str, str]]]]) -> Callable[[Any], list[Any]]:
        def callback(options: Any) -> list[Any]:
            target = ref()
            return [] if target is None else [observation(value, attrs) for value, attrs in read(target)]

        return callback

    def verifications(v: Verifier) -> Iterable[tuple[float, dict[str, str]]]:
        counts = v.counts
        yield from (
            (getattr(counts, path), {"outcome": "accepted", "path": path}) for path in ("local", "shared", "store")
        )
        yield from ((n, {"outcome": "refused", "reason": reason}) for reason, n in counts.refused.items())

    def feed_lag(v: Verifier) -> Iterable[tuple[float, dict[str, str]]]:
        current = None if feed_ref is None else feed_ref()
        if current is not None and current.state is not None:
            yield max(0.0, current.clock() - current.state.last_ok), {}

    meter.create_observable_counter(
        "pat.verifications", [observe(verifications)], unit="{request}", description="Verifications by outcome"
    )
    counters = {
        "pat.throttled": lambda v: v.counts.refused["throttled"],
        "pat.argon2.runs": lambda v: v.counts.argon2,
        "pat.store.errors": lambda v: v.counts.store_errors,
        "pat.cache.errors": lambda v: v.counts.cache_errors,
    }
    for name, read in counters.items():
        meter.create_observable_counter(name, [observe(_single(read))])
    meter.create_observable_gauge("pat.local_cache.size", [observe(_single(lambda v: len(v.local)))], unit="{token}")
    meter.create_observable_gauge("pat.revocation_feed.lag", [observe(feed_lag)], unit="s")
    argon2 = meter.create_histogram("pat.argon2.duration", unit="s", description="Seconds per argon2 run")
    store = meter.create_histogram("pat.store.duration", unit="s", description="Seconds per store call")
    verifier.on_argon2 = argon2.record
    verifier.on_store_call = store.record
    executor = getattr(verifier.shared, "executor", None)  # RedisCache's
    if executor is not None and hasattr(executor, "on_round_trip"):
        cache = meter.create_histogram("pat.cache.duration", unit="s", description="Seconds per Redis round trip")
        executor.on_round_trip = cache.record
    return True


def _single(read: Callable[[Verifier], float]) -> Callable[[Verifier], Iterable[tuple[float, dict[str, str]]]]:
    def one(v: Verifier) -> Iterable[tuple[float, dict[str, str]]]:
        yield read(v), {}

    return one
