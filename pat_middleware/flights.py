"""Single-flight for cold verifications, and the argon2 pool both drivers share.

Sixty-four requests that arrive together with one valid but uncached token
must not read the store sixty-four times and run argon2 sixty-four times.
:class:`Flights` lets the first of them (the *leader*) run the cold
verification while the others wait for it; each waiter then runs the
verification flow again, which now ends at the local cache the leader
filled (a hit, or a negative entry for a refused token) without I/O. When
the leader could not reach the store, the waiters get the same
``StoreUnavailable`` rather than trying again at once.

One table serves threads (the sync path), another asyncio tasks (the async
path): a thread never blocks waiting on a task of its own event loop.

:class:`PooledHasher` runs every hasher call on the dedicated hash pool, for
sync callers too, so argon2 runs at most ``hash_workers`` at a time in the
process whichever edge asks (32 request threads of a threaded WSGI server
each running argon2 at once held 600 MiB; ``Argon2Hasher`` also maps each
run's memory afresh and unmaps it after, so the peak is the runs in progress).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from pat_middleware.errors import StoreUnavailable
from pat_middleware.hashing import Hasher

__all__ = ["Flights", "PooledHasher"]

T = TypeVar("T")


class _Flight:
    """One verification in flight: how it ended, and who waits for it (created
    only when someone does, so a leader alone pays one small object)."""

    __slots__ = ("error", "event", "waiters")

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.event: threading.Event | None = None
        self.waiters: list[asyncio.Future[None]] | None = None


class Flights:
    """A table of verifications in flight, keyed by the token's digest."""

    def __init__(self) -> None:
        self._running: dict[Hashable, _Flight] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._running)

    def run(self, key: Hashable, verify: Callable[[], T]) -> T:
        """``verify()`` unless the same key is in flight: then wait for it and verify again."""
        while True:
            with self._lock:
                flight = self._running.get(key)
                if flight is None:
                    flight = self._running[key] = _Flight()
                    event = None
                else:
                    event = flight.event = flight.event or threading.Event()
            if event is None:
                return self._lead(key, flight, verify)
            event.wait()
            _follow(flight.error)

    async def arun(self, key: Hashable, verify: Callable[[], Awaitable[T]]) -> T:
        """:meth:`run` for asyncio tasks."""
        while True:
            with self._lock:
                flight = self._running.get(key)
                if flight is None:
                    flight = self._running[key] = _Flight()
                    waiter = None
                else:
                    waiter = asyncio.get_running_loop().create_future()
                    if flight.waiters is None:
                        flight.waiters = []
                    flight.waiters.append(waiter)
            if waiter is None:
                error: BaseException | None = None
                try:
                    return await verify()
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    self._land(key, flight, error)
            await waiter
            _follow(flight.error)

    def _lead(self, key: Hashable, flight: _Flight, verify: Callable[[], T]) -> T:
        error: BaseException | None = None
        try:
            return verify()
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._land(key, flight, error)

    def _land(self, key: Hashable, flight: _Flight, error: BaseException | None) -> None:
        with self._lock:
            del self._running[key]
            flight.error = error
        if flight.event is not None:
            flight.event.set()
        for waiter in flight.waiters or ():
            waiter.get_loop().call_soon_threadsafe(_wake, waiter)


def _follow(leader_error: BaseException | None) -> None:
    """After the leader landed: share its store outage; otherwise verify again
    (the local cache now answers: a hit, a negative entry, or a new flight
    when an invalidation raced the leader's fill)."""
    if isinstance(leader_error, StoreUnavailable):
        raise StoreUnavailable() from leader_error


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():  # a follower cancelled meanwhile
        waiter.set_result(None)


class PooledHasher:
    """A :class:`~pat_middleware.hashing.Hasher` whose calls run on ``pool``
    (the caller's thread waits). ``needs_rehash`` is cheap and runs inline."""

    def __init__(self, hasher: Hasher, pool: Callable[[], ThreadPoolExecutor]) -> None:
        self.hasher = hasher
        self._pool = pool

    def hash(self, secret: str) -> str:
        """``hasher.hash`` on the pool."""
        return self._pool().submit(self.hasher.hash, secret).result()

    def verify(self, stored: str, secret: str) -> bool:
        """``hasher.verify`` on the pool."""
        return self._pool().submit(self.hasher.verify, stored, secret).result()

    def needs_rehash(self, stored: str) -> bool:
        """``hasher.needs_rehash``, inline."""
        return self.hasher.needs_rehash(stored)
