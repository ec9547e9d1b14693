"""The invalidation channel listener: one daemon thread per :class:`RedisCache`.

The thread holds one dedicated Redis connection subscribed to the channel
and calls ``on_invalidate(ids)`` for each message. Its :attr:`subscribed`
flag is True only while the subscription is confirmed live: it drops to
False the moment the connection fails or a health ``PING`` goes unanswered
(a silently dead connection is noticed within about ``2 * ping_interval``).
``on_reconnect`` (the core flushes its local cache) runs whenever messages
may have been missed: as soon as a live subscription is lost (entries
cached while subscribed must not outlive the short unsubscribed TTL), and
again once resubscribed. The thread reconnects with capped exponential
backoff, cut short by :meth:`InvalidationListener.poke` (the cache pokes it
when its own calls find Redis answering again, e.g. on a new primary after
a failover); once resubscribed it runs ``before_ready`` (re-sending
invalidations that could not be published), then ``on_reconnect``, and only
then sets :attr:`subscribed` again. ``on_pong`` runs after each answered
health check (the cache re-sends invalidations lost in a blip too short to
break the channel). It uses a raw connection rather than
redis-py's ``PubSub``, whose transparent reconnects would hide exactly the
gaps this class must report.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from redis.connection import AbstractConnection
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pat_middleware.daemon import DaemonThread

__all__ = ["InvalidationListener"]

logger = logging.getLogger("pat_middleware.redis")

InvalidateCallback = Callable[[list[str]], None]
ReconnectCallback = Callable[[], None]


def parse_message(data: bytes) -> list[str]:
    """The ids in a channel message (ids joined by commas)."""
    return [part for part in data.decode("ascii", "replace").split(",") if part]


class InvalidationListener:
    """Subscribes to ``channel`` in a background thread; see the module docstring."""

    def __init__(
        self,
        connect: Callable[[], AbstractConnection],
        channel: str,
        *,
        before_ready: Callable[[], None] = lambda: None,
        on_pong: Callable[[], None] = lambda: None,
        ping_interval: float = 0.5,
        backoff: tuple[float, float] = (0.1, 2.0),
        poll: float = 0.1,
    ) -> None:
        self._connect = connect
        self.channel = channel
        self._before_ready = before_ready
        self._on_pong = on_pong
        self.ping_interval = ping_interval
        self.backoff = backoff
        self.poll = poll
        self._on_invalidate: InvalidateCallback | None = None
        self._on_reconnect: ReconnectCallback | None = None
        self._subscribed = False
        self._daemon = DaemonThread(self._run, f"pat-redis-listener[{channel}]")
        self._stop = self._daemon.stopping
        self._wake = threading.Event()  # ends a backoff wait early: stop() or poke()
        self._lost = False

    @property
    def lost(self) -> bool:
        """True from a failure of the channel (or of its first connection) until
        it is subscribed again: invalidations may have been missed meanwhile."""
        return self._lost

    @property
    def subscribed(self) -> bool:
        """True only while the subscription is confirmed live (in this process)."""
        return self._subscribed and not self._daemon.forked

    def start(
        self,
        on_invalidate: InvalidateCallback | None = None,
        on_reconnect: ReconnectCallback | None = None,
    ) -> None:
        """Install the callbacks (when given) and start the thread unless it runs."""
        if on_invalidate is not None:
            self._on_invalidate = on_invalidate
        if on_reconnect is not None:
            self._on_reconnect = on_reconnect
        self._daemon.start(self._prepare)

    def _prepare(self, forked: bool) -> None:
        if forked:  # the parent's subscription is not ours
            self._subscribed = False

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for it. Idempotent; the listener cannot restart."""
        self._stop.set()
        self._wake.set()
        self._daemon.stop(timeout)
        self._subscribed = False

    def poke(self) -> None:
        """Try to reconnect now instead of at the end of the backoff (the cache
        found Redis answering again); no effect while subscribed."""
        self._wake.set()

    # -- the thread -----------------------------------------------------------
    def _run(self) -> None:
        delay = self.backoff[0]
        while not self._stop.is_set():
            conn: Any = None  # redis-py's connection methods are untyped
            self._wake.clear()
            try:
                conn = self._connect()
                self._subscribe(conn)
                self._before_ready()
                self._flush()
                self._subscribed = True
                self._wake.clear()  # pokes from before_ready's own success
                self._report_up()
                delay = self.backoff[0]
                self._pump(conn)
            except Exception as exc:
                was_subscribed, self._subscribed = self._subscribed, False
                self._report_down(exc)
                if was_subscribed:
                    # Entries cached while subscribed were trusted for the long
                    # subscribed TTL: drop them now, or they would outlive the
                    # unsubscribed bound (revocations are no longer heard).
                    with contextlib.suppress(Exception):
                        self._flush()
            finally:
                self._subscribed = False
                if conn is not None:
                    conn.disconnect()
            self._wake.wait(delay)
            if self._stop.is_set():
                break
            delay = min(delay * 2, self.backoff[1])

    def _flush(self) -> None:
        callback = self._on_reconnect
        if callback is None:
            return
        try:
            callback()
        except Exception:
            logger.exception("on_reconnect failed")
            raise

    def _subscribe(self, conn: Any) -> None:
        conn.connect()
        conn.send_command("SUBSCRIBE", self.channel)
        if not conn.can_read(timeout=max(self.ping_interval, 0.25)):
            raise RedisTimeoutError("no reply to SUBSCRIBE")
        reply = conn.read_response()
        if not (isinstance(reply, list) and reply and reply[0] == b"subscribe"):
            raise RedisError(f"unexpected reply to SUBSCRIBE: {reply!r:.80}")

    def _pump(self, conn: Any) -> None:
        last_ping = time.monotonic()
        pong_due: float | None = None
        while not self._stop.is_set():
            if conn.can_read(timeout=self.poll) and self._handle(conn.read_response()) == b"pong":
                pong_due = None
                self._on_pong()
            now = time.monotonic()
            if pong_due is not None and now > pong_due:
                raise RedisTimeoutError("no reply to PING on the invalidation channel")
            if pong_due is None and now - last_ping >= self.ping_interval:
                conn.send_command("PING")
                last_ping, pong_due = now, now + self.ping_interval

    def _handle(self, reply: Any) -> Any:
        """Deliver a channel message; return the reply's kind (b"message", b"pong"...)."""
        kind = reply[0] if isinstance(reply, list) and reply else None
        callback = self._on_invalidate
        if kind == b"message" and callback is not None:
            ids = parse_message(reply[2])
            if ids:
                try:
                    callback(ids)
                except Exception:
                    # The local cache may now hold revoked entries: resubscribe,
                    # which flushes it through on_reconnect.
                    logger.exception("on_invalidate failed; resubscribing")
                    raise
        return kind

    # -- logging: once per loss, once per recovery ------------------------------
    def _report_down(self, exc: BaseException) -> None:
        if not self._lost and not self._stop.is_set():
            self._lost = True
            logger.warning(
                "Redis invalidation channel %r lost (%s: %s); local cache entries now "
                "live at most the unsubscribed TTL; reconnecting",
                self.channel,
                type(exc).__name__,
                exc,
            )

    def _report_up(self) -> None:
        if self._lost:
            self._lost = False
            logger.warning("Redis invalidation channel %r subscribed again", self.channel)
