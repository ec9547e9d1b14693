"""A token-management process for the deployment tests' rotate/revoke race.

Each racer is a spawned interpreter with its own :class:`PATAuth` (own
PostgreSQL pool, Redis clients, listener), built by
:func:`redis_procs.make_auth`. Told ``(action, token_id, at)``, it waits
until the wall clock reads ``at``, then rotates or revokes the token through
its manager and reports what happened.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from multiprocessing.connection import Connection
from typing import Any

from redis_procs import make_auth

from pat_middleware.errors import TokenRevoked
from pat_middleware.events import Event

__all__ = ["Racer", "racers"]


def _wait_until(at: float) -> None:
    """Sleep until ``time.time() >= at``, spinning for the last 2 ms."""
    while (left := at - time.time()) > 0.002:
        time.sleep(left - 0.002)
    while time.time() < at:
        pass


def _act(auth: Any, events: list[Event], action: str, token_id: str) -> tuple[Any, ...]:
    """Rotate or revoke ``token_id``; the outcome as a picklable tuple."""
    del events[:]
    try:
        if action == "rotate":
            new = auth.manager.rotate(token_id)
            return ("rotated", new.record.id, new.token)
        auth.manager.revoke(token_id)
        return ("revoked", any(e.kind == "revoked" and e.token_id == token_id for e in events))
    except TokenRevoked as exc:
        return ("family_revoked",) if exc.family_revoked else ("token_revoked",)
    except Exception as exc:  # anything else is a defect the test reports
        return ("error", f"{type(exc).__name__}: {exc}")


def racer_process(conn: Connection, store_url: str, cache_url: str, cache_prefix: str) -> None:
    """The child's loop: ``(action, token_id, at)`` in, one outcome out; ``("stop",)`` ends it."""
    events: list[Event] = []
    auth = make_auth(store_url, cache_url, cache_prefix, on_event=events.append)
    try:
        auth.manager.list("race-warm-up")  # open the database pool and the Redis connection first
        auth.cache.lookup("race-warm-up", b"")  # type: ignore[union-attr]
        conn.send(("ready",))
        while (message := conn.recv())[0] != "stop":
            action, token_id, at = message
            _wait_until(at)
            conn.send(_act(auth, events, action, token_id))
    finally:
        auth.close()
        conn.close()


class Racer:
    """The parent's handle on a :func:`racer_process`."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def send(self, action: str, token_id: str, at: float) -> None:
        self.conn.send((action, token_id, at))

    def recv(self, timeout: float = 15.0) -> tuple[Any, ...]:
        if not self.conn.poll(timeout):
            raise TimeoutError("racer process sent nothing")
        reply: tuple[Any, ...] = self.conn.recv()
        return reply


@contextmanager
def _racer(store_url: str, cache_url: str, cache_prefix: str) -> Iterator[Racer]:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=racer_process, args=(child, store_url, cache_url, cache_prefix), daemon=True)
    process.start()
    child.close()
    try:
        yield Racer(parent)
    finally:
        with suppress(OSError):
            parent.send(("stop",))
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join()
        parent.close()


@contextmanager
def racers(count: int, store_url: str, cache_url: str, cache_prefix: str) -> Iterator[list[Racer]]:
    """``count`` racer processes, each ready (pools open) when this yields."""
    with ExitStack() as stack:
        started = [stack.enter_context(_racer(store_url, cache_url, cache_prefix)) for _ in range(count)]
        for racer in started:
            ready = racer.recv(timeout=60.0)
            if ready != ("ready",):
                raise RuntimeError(f"racer process not ready: {ready!r}")
        yield started
