"""Health and readiness: is the token store reachable, is the Redis cache, is this
process hearing revocations. A flow (no I/O of its own), run by ``PATAuth.health()``
and ``await PATAuth.ahealth()``; the edges serve it as liveness and readiness.

Ready means the store answers: without it no uncached token can be checked
(requests get 503). The cache and its channel are reported, not required:
without Redis the library keeps working on the store, with the revocation
bound of the change feed (``revocation_poll``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from pat_middleware.cache.local import SharedCache
from pat_middleware.core.flow import Flow, perform
from pat_middleware.stores.base import Store

__all__ = ["PROBE_ID", "Check", "Health", "OutageLog", "VerifierCounts", "describe", "exception_line", "health_flow"]

logger = logging.getLogger("pat_middleware")

#: The key id a health check looks up: no token has it (key ids are base62).
PROBE_ID = "health-probe"


@dataclass(frozen=True)
class Check:
    """One dependency's answer: reachable or not, how long it took, and why not."""

    ok: bool
    latency_ms: float
    error: str | None = None


@dataclass(frozen=True)
class Health:
    """What :meth:`PATAuth.health` reports.

    ``cache`` and ``subscribed`` are ``None`` without a shared cache;
    ``feed_lag`` (seconds since the change feed's last successful poll) is
    ``None`` without a feed or before its first poll.
    """

    store: Check
    cache: Check | None
    subscribed: bool | None
    feed_lag: float | None

    @property
    def ready(self) -> bool:
        """True when the store answers (the cache is not required)."""
        return self.store.ok

    @property
    def status_code(self) -> int:
        """The readiness endpoints' HTTP status: 200 when ready, else 503."""
        return 200 if self.ready else 503

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"status": "ok"|"unavailable", "store": {...}, ...}``."""
        return {"status": "ok" if self.ready else "unavailable", **asdict(self)}


def exception_line(exc: BaseException) -> str:
    """``ClassName: first line of the message``, at most 200 characters (database
    errors can carry statements and parameters): for logs, health answers and the CLI."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:200]}".rstrip(": ")


def describe(exc: BaseException) -> str:
    """:func:`exception_line` of the driver's error behind ``exc`` (its cause), else of ``exc``."""
    return exception_line(exc.__cause__ or exc)


def health_flow(shared: SharedCache | None, feed_lag: float | None) -> Flow[Health]:
    """Probe the store (one lookup of :data:`PROBE_ID`) and the shared cache (one lookup);
    ``feed_lag`` is reported as given."""
    store = yield from _probe(perform(Store.get, PROBE_ID))
    cache = subscribed = None
    if shared is not None:
        cache = yield from _probe(perform(SharedCache.lookup, PROBE_ID, bytes(32), None))
        subscribed = shared.subscribed
    return Health(store, cache, subscribed, None if feed_lag is None else round(feed_lag, 3))


def _probe(effect: Flow[Any]) -> Flow[Check]:
    started = time.perf_counter()
    try:
        yield from effect
    except Exception as exc:
        return Check(False, _ms_since(started), describe(exc))
    return Check(True, _ms_since(started))


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


@dataclass(slots=True)
class VerifierCounts:
    """What a process's verifier did since it started, for metrics: accepted requests by
    where the token was found (``local``, ``shared``, ``store``), refusals by reason,
    argon2 runs, failed store and cache calls. Plain integers, read on collection."""

    local: int = 0
    shared: int = 0
    store: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    argon2: int = 0
    store_errors: int = 0
    cache_errors: int = 0


class OutageLog:
    """Logs a dependency's outage once, with its cause, and once when it answers again."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.down_since: float | None = None
        self._lock = threading.Lock()

    def failed(self, exc: BaseException) -> None:
        """A call failed: log the outage if it is new."""
        if self.down_since is None:
            with self._lock:
                if self.down_since is None:
                    self.down_since = time.monotonic()
                    logger.warning("%s unavailable: %s", self.what, describe(exc))

    def ok(self) -> None:
        """A call succeeded: log the recovery if there was an outage (one attribute read otherwise)."""
        if self.down_since is not None:
            with self._lock:
                if self.down_since is not None:
                    logger.warning("%s reachable again after %.1f s", self.what, time.monotonic() - self.down_since)
                    self.down_since = None
