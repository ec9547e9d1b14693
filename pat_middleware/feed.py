"""The revocation feed: the bound on revocation that does not depend on Redis.

Every store write that ends or changes a token's validity (revocation,
rotation, a change of expiry, scopes, networks or name) stamps the record
with the store's clock (``changed_at``). Every process asks the store, every
``revocation_poll`` seconds, which ids changed since its last successful
poll (one indexed query, whatever the number of tokens) and drops them from
its local cache and from the shared cache. Pub/sub stays the fast path
(milliseconds); the feed is the bound: a revocation reaches every process
within ``revocation_poll`` plus one query, whatever happens to Redis.

Two things could make a poll miss a change, and the query's horizon reaches
back ``lookback`` seconds (30 by default) before the previous poll's start
to cover both:

* a transaction stamps ``changed_at`` before it commits, so a change may
  become visible after a later-stamped one was already read (PostgreSQL
  commits out of order);
* the writer's clock (SQLite's is the writing host's) may differ from this
  host's by a few seconds.

While the Redis invalidation channel is configured but down, the feed polls
every second (or ``revocation_poll``, if shorter): the channel's fast path is
gone, so the feed takes its place. Changes already seen are remembered by
``(id, changed_at)`` so a change is acted on once. When polls fail (the store is unreachable), nothing tells
this process about revocations any more: once ``revocation_poll`` plus
``query_allowance`` have passed since the start of the last successful poll,
every local entry is treated as stale (:attr:`FeedState.trusted_until`) and
revalidated against the store, which answers 503 while it is down.

:class:`FeedState` holds those rules and does no I/O; :class:`RevocationFeed`
runs them on one daemon thread per process.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import datetime

from pat_middleware.daemon import DaemonThread
from pat_middleware.models import from_timestamp, utc

__all__ = ["FeedState", "RevocationFeed"]

logger = logging.getLogger("pat_middleware")

#: One change as the store reports it: the token id and the store's ``changed_at``.
Change = tuple[str, datetime]


class FeedState:
    """What the feed knows: where the next query starts, what was seen, and
    until when local entries may be trusted. No I/O, no thread."""

    def __init__(self, interval: float, lookback: float, query_allowance: float, now: float) -> None:
        self.interval = interval
        self.lookback = lookback
        self.query_allowance = query_allowance
        #: Start of the last successful poll (initially: when the feed started).
        self.last_ok = now
        #: Local entries are stale from this moment (epoch seconds) unless a poll succeeds.
        self.trusted_until = now + interval + query_allowance
        self._seen: dict[Change, float] = {}

    def since(self) -> datetime:
        """The horizon of the next query."""
        return from_timestamp(self.last_ok - self.lookback)

    def succeeded(self, started: float, changes: list[Change]) -> list[str]:
        """A poll that started at ``started`` returned ``changes``: the ids seen for the first time."""
        horizon = self.last_ok - self.lookback
        self.last_ok = max(self.last_ok, started)
        self.trusted_until = self.last_ok + self.interval + self.query_allowance
        for key in [k for k, stamp in self._seen.items() if stamp < horizon]:
            del self._seen[key]
        fresh: dict[str, None] = {}
        for token_id, changed_at in changes:
            key = (token_id, utc(changed_at))
            if key not in self._seen:
                self._seen[key] = key[1].timestamp()
                fresh[token_id] = None
        return list(fresh)


class RevocationFeed:
    """Polls ``poll(since)`` every ``interval`` seconds on a daemon thread and
    hands the ids that changed to ``on_changed``.

    ``poll`` is the store's ``changes_since`` (run through the sync driver);
    ``publish_deadline`` receives :attr:`FeedState.trusted_until` after every
    poll, successful or not.
    """

    def __init__(
        self,
        poll: Callable[[datetime], list[Change]],
        on_changed: Callable[[list[str]], None],
        publish_deadline: Callable[[float], None],
        *,
        interval: float,
        lookback: float = 30.0,
        query_allowance: float = 1.0,
        clock: Callable[[], float],
        degraded: Callable[[], bool] = lambda: False,
    ) -> None:
        self._poll = poll
        self._on_changed = on_changed
        self._publish_deadline = publish_deadline
        self.interval = interval
        self.lookback = lookback
        self.query_allowance = query_allowance
        self.clock = clock
        self._degraded = degraded
        #: The pace while ``degraded()`` (the invalidation channel is down): at most 1 s.
        self.fast_interval = min(interval, 1.0)
        self.state: FeedState | None = None
        self.failures = 0
        self._daemon = DaemonThread(self._run, "pat-revocation-feed")
        self._stop = self._daemon.stopping
        self._failing = False

    def start(self) -> None:
        """Start the thread unless it runs (idempotent; a forked child starts its own)."""
        self._daemon.start(self._prepare)

    def _prepare(self, forked: bool) -> None:
        if forked or self.state is None:
            self.state = FeedState(self.interval, self.lookback, self.query_allowance, self.clock())
            self._publish_deadline(self.state.trusted_until)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for it. The feed cannot restart."""
        self._daemon.stop(timeout)

    def poll_once(self) -> list[str]:
        """One poll: query, hand the fresh ids on, move the deadline. Returns the fresh ids.

        Raises what the query raised (the deadline then stays where it was).
        """
        state = self.state
        if state is None:
            state = self.state = FeedState(self.interval, self.lookback, self.query_allowance, self.clock())
        started = self.clock()
        changes = self._poll(state.since())
        fresh = state.succeeded(started, changes)
        if fresh:
            self._on_changed(fresh)
        self._publish_deadline(state.trusted_until)
        return fresh

    def _run(self) -> None:
        # Paced by the monotonic clock in slices of fast_interval, so a channel lost
        # in the middle of a long wait switches to the fast pace at once.
        last = -math.inf
        while not self._stop.is_set():
            now = time.monotonic()
            due = last + (self.fast_interval if self._degraded() else self.interval)
            if now < due:
                if self._stop.wait(min(due - now, self.fast_interval)):
                    break
                continue
            last = now
            try:
                self.poll_once()
            except Exception as exc:
                self.failures += 1
                if not self._failing:
                    self._failing = True
                    logger.warning(
                        "revocation feed: the store could not be polled (%s); cached tokens are "
                        "revalidated against the store once the bound has passed",
                        type(exc).__name__,
                    )
            else:
                if self._failing:
                    self._failing = False
                    logger.warning("revocation feed: polling the store again")
