"""Token-management processes for the deployment tests' rotate/revoke race.

Each racer is a one-process pool in a spawned interpreter with its own
:class:`PATAuth` (own PostgreSQL pool, Redis clients), built by
:func:`redis_procs.make_auth`. :func:`act` waits until the wall clock reads
``at``, then rotates or revokes a token through that process's manager and
reports what happened.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from multiprocessing.util import Finalize
from typing import Any

from redis_procs import make_auth

from pat_middleware import PATAuth
from pat_middleware.core.events import Event
from pat_middleware.errors import TokenRevoked

__all__ = ["act", "racers"]

_auth: PATAuth | None = None
_events: list[Event] = []


def _start(store_url: str, cache_url: str, cache_prefix: str) -> None:
    """Per racer process: build its PATAuth and open its connections."""
    global _auth
    _auth = auth = make_auth(store_url, cache_url, cache_prefix, on_event=_events.append)
    Finalize(auth, auth.close, exitpriority=10)
    auth.manager.list("race-warm-up")  # the database pool and the Redis connection, before any race
    assert auth.cache is not None
    auth.cache.lookup("race-warm-up", b"")


def _wait_until(at: float) -> None:
    """Sleep until ``time.time() >= at``, spinning for the last 2 ms."""
    while (left := at - time.time()) > 0.002:
        time.sleep(left - 0.002)
    while time.time() < at:
        pass


def act(action: str, token_id: str, at: float) -> tuple[Any, ...]:
    """At ``at``, rotate or revoke ``token_id`` in this racer; the outcome as a tuple:
    ``("rotated", new id, new token)``, ``("revoked", changed)``, ``("family_revoked",)``,
    ``("token_revoked",)`` or ``("error", what)``."""
    assert _auth is not None, "not a racer process"
    _wait_until(at)
    del _events[:]
    try:
        if action == "rotate":
            new = _auth.manager.rotate(token_id)
            return ("rotated", new.record.id, new.token)
        _auth.manager.revoke(token_id)
        return ("revoked", any(e.kind == "revoked" and e.token_id == token_id for e in _events))
    except TokenRevoked as exc:
        return ("family_revoked",) if exc.family_revoked else ("token_revoked",)
    except Exception as exc:  # anything else is a defect the test reports
        return ("error", f"{type(exc).__name__}: {exc}")


@contextmanager
def racers(count: int, store_url: str, cache_url: str, cache_prefix: str) -> Iterator[list[ProcessPoolExecutor]]:
    """``count`` racers, each a separate spawned process, started and connected when this yields."""
    context = multiprocessing.get_context("spawn")
    with ExitStack() as stack:
        pools = [
            stack.enter_context(
                ProcessPoolExecutor(
                    1, mp_context=context, initializer=_start, initargs=(store_url, cache_url, cache_prefix)
                )
            )
            for _ in range(count)
        ]
        pids = {pool.submit(os.getpid).result(timeout=60) for pool in pools}
        assert len(pids) == count and os.getpid() not in pids, pids
        yield pools
