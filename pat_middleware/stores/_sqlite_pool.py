"""Connections for :class:`~pat_middleware.stores.sqlite.SQLiteStore`: a small pool,
and the mapping of SQLite's "cannot reach the data" errors to ``StoreUnavailable``."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from types import TracebackType

from pat_middleware.errors import StoreUnavailable

__all__ = ["Pool", "unavailable"]

#: Primary result codes that mean "cannot reach the data right now", not a bug:
#: BUSY, LOCKED, NOMEM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB.
_UNAVAILABLE_CODES = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 15, 26})


def unavailable(error: BaseException) -> StoreUnavailable | None:
    """The ``StoreUnavailable`` to raise for ``error``, or ``None`` if it is something else."""
    code = getattr(error, "sqlite_errorcode", None)
    if not isinstance(error, sqlite3.DatabaseError) or code is None:
        return None
    if (code & 0xFF) not in _UNAVAILABLE_CODES:
        return None
    name = getattr(error, "sqlite_errorname", "?")
    return StoreUnavailable(f"The token store is unavailable (SQLite {name})")


def _closed() -> StoreUnavailable:
    return StoreUnavailable("The token store is closed")


class Pool:
    """Hands out connections, one user at a time.

    A file database gets as many connections as there are concurrent callers;
    idle ones (at most ``max_idle``) are kept, statement caches warm. With
    ``:memory:`` there is a single shared connection behind a lock, because
    every in-memory connection is a different database. The first connection
    switches the file to WAL and runs ``setup`` (idempotent: creates or upgrades the schema).
    """

    def __init__(
        self, path: str, timeout: float, setup: Callable[[sqlite3.Connection], None], max_idle: int = 8
    ) -> None:
        self._path, self._timeout, self._setup = path, timeout, setup
        self._shared = path in (":memory:", "")
        self._max_idle = max_idle
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()  # guards _idle and closed
        self._shared_lock = threading.Lock()  # held while the :memory: connection is in use
        self._setup_lock = threading.Lock()
        self._ready = False
        self.closed = False

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, timeout=self._timeout, isolation_level=None, check_same_thread=False)
        try:
            if not self._shared:
                # Reads through a memory map: a lookup in a large file costs no read() call.
                conn.execute("PRAGMA mmap_size=268435456")
            if not self._ready:
                with self._setup_lock:
                    if not self._ready:
                        conn.execute("PRAGMA journal_mode=WAL")
                        self._setup(conn)
                        self._ready = True
        except BaseException:
            conn.close()
            raise
        return conn

    def acquire(self) -> sqlite3.Connection:
        """A connection for the caller alone, until :meth:`release`."""
        if self._shared:
            self._shared_lock.acquire()
            try:
                if self.closed:
                    raise _closed()
                if not self._idle:
                    self._idle.append(self._open())
                return self._idle[0]
            except BaseException:
                self._shared_lock.release()
                raise
        with self._lock:
            if self.closed:
                raise _closed()
            if self._idle:
                return self._idle.pop()
        return self._open()

    def release(self, conn: sqlite3.Connection) -> None:
        """Give ``conn`` back, rolling back an unfinished transaction (which only
        an error leaves behind; if even the rollback fails, the connection is dropped)."""
        healthy = True
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            healthy = False  # the caller's own error is the one to report
        if self._shared:
            if not healthy:
                self._idle.clear()
                conn.close()
            self._shared_lock.release()
            return
        with self._lock:
            keep = healthy and not self.closed and len(self._idle) < self._max_idle
            if keep:
                self._idle.append(conn)
        if not keep:
            conn.close()

    def close(self) -> None:
        """Close idle connections now, busy ones when they are released."""
        with self._shared_lock, self._lock:
            self.closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class Lease:
    """``with Lease(pool) as conn``: a pooled connection; SQLite errors that mean
    the data cannot be reached come out as ``StoreUnavailable`` (cause chained)."""

    __slots__ = ("_conn", "_pool")

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def __enter__(self) -> sqlite3.Connection:
        try:
            self._conn = self._pool.acquire()
        except sqlite3.DatabaseError as exc:
            mapped = unavailable(exc)
            if mapped is None:
                raise
            raise mapped from exc
        return self._conn

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._pool.release(self._conn)
        if error is not None:
            mapped = unavailable(error)
            if mapped is not None:
                raise mapped from error
