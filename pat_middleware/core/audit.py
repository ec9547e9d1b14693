"""The security log: what happened to each token, kept in the store for its
owner and administrators to read.

:class:`LogEntry` is one persisted event; :class:`LogQuery` a question to
the log (newest first, with a cursor); :func:`log_matches` the one statement
of what every store's answer must be. :class:`SecurityLog` is the writer:
the event hook appends to a bounded buffer and returns; a background thread
writes batches to the store. A request never waits on it, and a store outage
drops entries with a counter (:attr:`SecurityLog.dropped`), never failing a
request. No entry ever holds a secret: events carry none.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pat_middleware.core.events import Event
from pat_middleware.core.models import from_timestamp, utc
from pat_middleware.core.query import MAX_PAGE
from pat_middleware.errors import PolicyViolation

__all__ = [
    "DEFAULT_RETENTION",
    "LOGGED_KINDS",
    "LogEntry",
    "LogPage",
    "LogQuery",
    "SecurityLog",
    "answer_log",
    "entry_id",
    "log_matches",
]

logger = logging.getLogger("pat_middleware")

#: The event kinds the log keeps (not ``verified``/``failed``, which every request
#: may emit; refusals for throttling are kept as one ``throttled`` summary per window).
LOGGED_KINDS = frozenset(
    {
        "created",
        "renamed",
        "updated",
        "rotated",
        "revoked",
        "family_revoked",
        "new_address",
        "throttled",
        "admin_action",
    }
)
#: How long entries are kept unless configured otherwise.
DEFAULT_RETENTION = timedelta(days=90)


_last_micros = 0
_id_lock = threading.Lock()


def entry_id(at: datetime) -> str:
    """A new entry id: 14 hex digits of microseconds since the epoch, then 8 random
    hex digits. Ids sort as their moments do; within one process they strictly
    increase, so entries of one moment keep the order they were made in (the
    microseconds part is moved on by one where it would repeat)."""
    global _last_micros
    micros = int(utc(at).timestamp() * 1_000_000)
    with _id_lock:
        if _last_micros - 1000 <= micros <= _last_micros:  # the same moment (within a millisecond)
            micros = _last_micros + 1
        _last_micros = micros
    return f"{micros:014x}{secrets.token_hex(4)}"


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One persisted event. ``user_id`` is the token's owner (whose log it is in);
    ``actor`` who acted when not the owner (``admin:<id>``, ``sweep``)."""

    id: str
    at: datetime
    kind: str
    token_id: str | None = None
    user_id: str | None = None
    actor: str | None = None
    client_ip: str | None = None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_event(cls, event: Event) -> LogEntry:
        """The entry for ``event`` (a fresh id at its moment)."""
        at = utc(event.at)
        return cls(
            entry_id(at), at, event.kind, event.token_id, event.user_id, event.actor, event.client_ip,
            event.reason, dict(event.details),
        )  # fmt: skip

    def public_dict(self) -> dict[str, Any]:
        """JSON-ready fields for the API, the CLI and the settings page."""
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "kind": self.kind,
            "token_id": self.token_id,
            "user_id": self.user_id,
            "actor": self.actor,
            "client_ip": self.client_ip,
            "reason": self.reason,
            "details": self.details,
        }


@dataclass(frozen=True, slots=True)
class LogQuery:
    """Which entries, newest first: every field is optional.

    ``user_id``/``token_id``: exactly; ``kinds``: any of these; ``since``: at
    or after; ``until``: strictly before; ``before``: the cursor, entries with
    an id lower than this one (the last id of the previous page).
    """

    user_id: str | None = None
    token_id: str | None = None
    kinds: tuple[str, ...] | None = None
    since: datetime | None = None
    until: datetime | None = None
    before: str | None = None
    limit: int = 100

    def __post_init__(self) -> None:
        if not isinstance(self.limit, int) or not 1 <= self.limit <= MAX_PAGE + 1:
            raise PolicyViolation(f"limit must be between 1 and {MAX_PAGE}", "limit")
        if self.kinds is not None:
            unknown = sorted(set(self.kinds) - LOGGED_KINDS)
            if unknown:
                raise PolicyViolation(f"unknown kinds: {' '.join(unknown)}", "kind")
        if self.before is not None and not (len(self.before) == 22 and _is_hex(self.before)):
            raise PolicyViolation("the cursor is not one this log gave", "cursor")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, utc(value))


@dataclass(frozen=True, slots=True)
class LogPage:
    """One page of the log, newest first; ``cursor`` fetches the next (``None``: last page)."""

    entries: list[LogEntry]
    cursor: str | None = None


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def log_matches(entry: LogEntry, query: LogQuery) -> bool:
    """Whether ``entry`` answers ``query``, the cursor included."""
    return (
        (query.user_id is None or entry.user_id == query.user_id)
        and (query.token_id is None or entry.token_id == query.token_id)
        and (query.kinds is None or entry.kind in query.kinds)
        and (query.since is None or entry.at >= query.since)
        and (query.until is None or entry.at < query.until)
        and (query.before is None or entry.id < query.before)
    )


def answer_log(entries: Iterable[LogEntry], query: LogQuery) -> list[LogEntry]:
    """The answer to ``query`` over ``entries`` by scanning them all (the memory
    and Redis stores; the reference the store contract compares with)."""
    hits = sorted((e for e in entries if log_matches(e, query)), key=lambda e: e.id, reverse=True)
    return hits[: query.limit]


class SecurityLog:
    """The buffered writer: :meth:`record` is the event hook (never blocks, never
    raises); a daemon thread hands batches to ``write`` every ``interval``
    seconds and calls ``prune`` with ``now - retention`` about once an hour.

    At most ``capacity`` entries wait; beyond that, and for every entry a
    failed ``write`` held, :attr:`dropped` counts the loss (and one warning is
    logged per outage). Refusals for throttling are counted per token and
    written as one ``throttled`` entry per ``throttle_window``, under the token's
    owner (``owner_of(token_id)``, asked on the thread: a refusal does not know it).
    The counts are kept without a lock, so under concurrent floods a few refusals
    may go uncounted: the entry says a flood happened and roughly how large.
    """

    def __init__(
        self,
        write: Callable[[list[LogEntry]], None],
        prune: Callable[[datetime], int] | None = None,
        owner_of: Callable[[str], str | None] | None = None,
        *,
        retention: timedelta = DEFAULT_RETENTION,
        capacity: int = 10_000,
        batch: int = 500,
        interval: float = 0.5,
        throttle_window: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._write = write
        self._prune = prune
        self._owner_of = owner_of
        self.retention = retention
        self.capacity = capacity
        self.batch = batch
        self.interval = interval
        self.throttle_window = throttle_window
        self.clock = clock
        self._pending: deque[LogEntry] = deque()
        self._inflight: list[LogEntry] = []  # the batch being written
        #: token id -> (owner, refusals) in the current throttle window
        self._throttled: dict[str, tuple[str | None, int]] = {}
        self._window_start = clock()
        self._next_prune = 0.0
        self.written = 0  #: entries the store accepted
        self.dropped = 0  #: entries lost: buffer full, or the store failed
        self._failing = False
        self._lock = threading.Lock()  # one flush at a time
        self._start_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._at_exit = False

    def record(self, event: Event) -> None:
        """The event hook: keep ``event`` if its kind is logged (see :data:`LOGGED_KINDS`)."""
        if event.kind == "failed":
            if event.reason == "throttled" and event.token_id is not None:
                self._count_throttled(event.token_id, event.user_id)
            return
        if event.kind not in LOGGED_KINDS:
            return
        if len(self._pending) >= self.capacity:
            self.dropped += 1
            return
        self._pending.append(LogEntry.from_event(event))
        self._ensure_thread()

    def _count_throttled(self, token_id: str, user_id: str | None) -> None:
        throttled = self._throttled
        owner, count = throttled.get(token_id, (user_id, 0))
        if count == 0 and len(throttled) >= self.capacity:
            self.dropped += 1
            return
        throttled[token_id] = (owner or user_id, count + 1)
        self._ensure_thread()

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid():
            return
        with self._start_lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()  # after a fork the child starts its own thread
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="pat-security-log", daemon=True)
            self._thread.start()
            if not self._at_exit:  # a script or a command that never closes its PATAuth keeps its entries
                self._at_exit = True
                atexit.register(_flush_at_exit, weakref.ref(self))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def _close_window(self, now: float, force: bool) -> None:
        if not self._throttled or (not force and now - self._window_start < self.throttle_window):
            return
        counts, self._throttled = self._throttled, {}
        window = round(now - self._window_start, 3)
        self._window_start = now
        at = from_timestamp(now)
        for token_id, (owner, count) in counts.items():
            if owner is None and self._owner_of is not None:
                try:
                    owner = self._owner_of(token_id)
                except Exception:  # the store is down: the entry is kept without its owner
                    owner = None
            details = {"count": count, "window_seconds": window}
            self._pending.append(LogEntry(entry_id(at), at, "throttled", token_id, owner, None, None, None, details))

    def pending(self) -> list[LogEntry]:
        """The entries not written yet (being written, or waiting): what a reader in
        this process adds to the store's answer, so it sees its own actions at once."""
        return [*self._inflight, *self._pending]

    def flush(self, force: bool = False, prune: bool = True) -> None:
        """Write what waits now (and, with ``force``, the open throttling window);
        with ``prune``, delete entries past the retention about once an hour."""
        now = self.clock()
        with self._lock:
            self._close_window(now, force)
            while self._pending:
                batch = self._inflight = [self._pending.popleft() for _ in range(min(self.batch, len(self._pending)))]
                try:
                    self._write(batch)
                except Exception as exc:  # an outage: lose this batch, count it, say so once
                    self.dropped += len(batch)
                    if not self._failing:
                        logger.warning("security log: could not write %d entries (%s); dropping", len(batch), exc)
                    self._failing = True
                    continue
                finally:
                    self._inflight = []
                if self._failing:
                    logger.warning("security log: writing again")
                self._failing = False
                self.written += len(batch)
            if prune and self._prune is not None and now >= self._next_prune:
                self._next_prune = now + 3600.0
                try:
                    self._prune(from_timestamp(now) - self.retention)
                except Exception as exc:
                    logger.warning("security log: could not prune old entries (%s)", exc)

    def close(self) -> None:
        """Stop the thread after writing what waits."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            thread.join(timeout=5.0)
        self.flush(force=True)


def _flush_at_exit(ref: weakref.ref[SecurityLog]) -> None:
    """At interpreter exit: write what a still-open log holds (its thread is a daemon)."""
    log = ref()
    if log is not None and (log._pending or log._throttled):
        log.flush(force=True, prune=False)
