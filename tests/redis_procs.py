"""A second OS process that verifies tokens, driven over a pipe.

Used by ``tests/test_redis_integration.py`` and ``bench/redis.py`` to check
what one process sees of another's revocations through a shared store and
Redis. The child builds its own :class:`PATAuth` (its own store connection,
Redis clients, listener thread and local cache) from URLs, so nothing is
shared with the parent but the store file and the Redis server. Both sides
use :data:`HASHER` (HMAC): argon2 would only add its own milliseconds.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from multiprocessing.connection import Connection
from typing import Any

from pat_middleware import PATAuth
from pat_middleware.core.hashing import HMACHasher
from pat_middleware.errors import InvalidToken, StoreUnavailable

__all__ = ["HASHER", "Verifier", "make_auth", "percentile", "propagation_delays", "spawn_verifier", "verifier_process"]

HASHER = HMACHasher(b"pat-middleware cross-process test key")


def make_auth(store_url: str, cache_url: str, cache_prefix: str, **options: Any) -> PATAuth:
    """The PATAuth both processes build (same hasher, same settings)."""
    return PATAuth.from_url(store_url, cache_url, cache_prefix=cache_prefix, hasher=HASHER, **options)


def _outcome(auth: PATAuth, token: str) -> tuple[str, str]:
    """``("ok", token id)``, ``("invalid", reason)``, ``("unavailable", "")`` or ``("error", what)``."""
    try:
        return "ok", auth.verify(token).token_id
    except InvalidToken as exc:
        return "invalid", exc.reason
    except StoreUnavailable:
        return "unavailable", ""
    except Exception as exc:  # anything else is a defect the tests report
        return "error", f"{type(exc).__name__}: {exc}"


def _wait_subscribed(auth: PATAuth, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not (auth.cache is not None and auth.cache.subscribed):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def _wait_touched(auth: PATAuth, token_id: str, timeout: float) -> bool:
    """Wait for the deferred last-used write of a first use to land: it would
    otherwise hold the SQLite write lock just when the other process revokes."""
    deadline = time.monotonic() + timeout
    while (record := auth.store.get(token_id)) is None or record.last_used_at is None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def _watch(auth: PATAuth, conn: Connection, token: str, pause: float) -> None:
    """Verify ``token`` (warming the caches), say ready, then verify it in a loop
    until it is rejected; report the ``time.monotonic()`` of the first rejection."""
    first = _outcome(auth, token)
    if first[0] != "ok" or not _wait_subscribed(auth, 5.0) or not _wait_touched(auth, first[1], 5.0):
        conn.send(("not-ready", first))
        return
    conn.send(("ready", None))
    while True:
        kind, detail = _outcome(auth, token)
        if kind != "ok":
            conn.send((kind, time.monotonic(), detail))
            return
        if pause:
            time.sleep(pause)  # a request's own I/O: lets the listener thread run


def verifier_process(
    conn: Connection, store_url: str, cache_url: str, cache_prefix: str, options: dict[str, Any]
) -> None:
    """The child's main loop: one command per message, one reply each."""
    auth = make_auth(store_url, cache_url, cache_prefix, **options)
    try:
        while True:
            command, *args = conn.recv()
            if command == "stop":
                break
            if command == "verify":
                conn.send(_outcome(auth, args[0]))
            elif command == "subscribed":
                conn.send(_wait_subscribed(auth, args[0]) if args else bool(auth.cache and auth.cache.subscribed))
            elif command == "watch":
                _watch(auth, conn, args[0], args[1])
            else:
                conn.send(("error", f"unknown command {command!r}"))
    finally:
        auth.close()
        conn.close()


class Verifier:
    """The parent's handle on a :func:`verifier_process`."""

    def __init__(self, conn: Connection, process: multiprocessing.process.BaseProcess) -> None:
        self.conn = conn
        self.process = process

    def call(self, *message: Any, timeout: float = 10.0) -> Any:
        """Send a command, wait for its reply."""
        self.conn.send(message)
        if not self.conn.poll(timeout):
            raise TimeoutError(f"verifier process did not answer {message[0]!r}")
        return self.conn.recv()

    def verify(self, token: str) -> tuple[str, str]:
        return self.call("verify", token)  # type: ignore[no-any-return]

    def subscribed(self, wait: float | None = None) -> bool:
        return bool(self.call("subscribed") if wait is None else self.call("subscribed", wait, timeout=wait + 5))

    def recv(self, timeout: float = 10.0) -> Any:
        if not self.conn.poll(timeout):
            raise TimeoutError("verifier process sent nothing")
        return self.conn.recv()


@contextmanager
def spawn_verifier(store_url: str, cache_url: str, cache_prefix: str, **options: Any) -> Iterator[Verifier]:
    """Start a verifier process (spawned: a fresh interpreter), stop it afterwards."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(
        target=verifier_process, args=(child, store_url, cache_url, cache_prefix, options), daemon=True
    )
    process.start()
    child.close()
    try:
        yield Verifier(parent, process)
    finally:
        with suppress(OSError):
            parent.send(("stop",))
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join()
        parent.close()


def propagation_delays(auth: PATAuth, other: Verifier, trials: int, pause: float = 0.0001) -> list[tuple[float, float]]:
    """Per trial: a fresh token that ``other`` verifies in a loop (from its local
    cache, ``pause`` seconds apart) is revoked through ``auth.manager``; returns
    the seconds from the revoke *call* and from its *return* to ``other``'s
    first rejection (the latter may be negative: the message can arrive before
    the call returns)."""
    delays: list[tuple[float, float]] = []
    for trial in range(trials):
        new = auth.manager.create(f"user{trial}", "propagation", ["repo:read"])
        reply = other.call("watch", new.token, pause)
        if reply != ("ready", None):
            raise RuntimeError(f"verifier process not ready: {reply!r}")
        time.sleep(random.uniform(0, 0.002))  # not in step with the other's loop
        called = time.monotonic()
        auth.manager.revoke(new.record.id)
        returned = time.monotonic()
        kind, rejected_at, reason = other.recv()
        if (kind, reason) != ("invalid", "revoked"):
            raise RuntimeError(f"unexpected outcome after revocation: {kind} {reason}")
        delays.append((rejected_at - called, rejected_at - returned))
    return delays


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
