"""One background thread per process, started on demand, stopped for good.

The invalidation listener and the revocation feed each run one daemon thread.
Both must start it lazily (constructing ``PATAuth`` starts no thread), at
most once, and again in a forked child (a pre-forking server's workers do not
inherit the parent's threads), and must stop it for good on ``close()``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

__all__ = ["DaemonThread"]


class DaemonThread:
    """Runs ``target`` on one daemon thread named ``name``; see the module docstring.

    ``target`` should return soon after :attr:`stopping` is set.
    """

    def __init__(self, target: Callable[[], None], name: str) -> None:
        self._target = target
        self.name = name
        #: Set by :meth:`stop`; the thread's loop watches it.
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()

    @property
    def thread(self) -> threading.Thread | None:
        """The thread started last (``None`` before the first start)."""
        return self._thread

    @property
    def forked(self) -> bool:
        """True in a child forked after the thread was set up here (its thread is the parent's)."""
        return self._pid != os.getpid()

    def start(self, prepare: Callable[[bool], None] = lambda forked: None) -> None:
        """Start the thread unless it runs or was stopped. ``prepare(forked)`` runs
        first, under the lock, whenever a thread is about to start (``forked``:
        this is a forked child, whose state from the parent must be reset)."""
        with self._lock:
            forked = self.forked
            if forked:
                self._pid, self._thread = os.getpid(), None
            if self.stopping.is_set() or (self._thread is not None and self._thread.is_alive()):
                return
            prepare(forked)
            self._thread = threading.Thread(target=self._target, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Set :attr:`stopping` and wait (up to ``timeout``) for the thread. Idempotent."""
        self.stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
