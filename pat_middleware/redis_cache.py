"""Redis as the shared verification cache, with the invalidation channel.

:class:`RedisCache` implements :class:`~pat_middleware.cache.SharedCache`;
its :attr:`RedisCache.async_cache` implements
:class:`~pat_middleware.cache.AsyncSharedCache` over ``redis.asyncio``.
Both are made from one source: each cache method is the
:class:`CachePlans` method of the same name (keys, commands, Lua scripts,
reply parser), sent by one :class:`~pat_middleware.redis_exec.Executor`
(``sync_method``/``async_method``); no method is written twice.

Keys and commands are in :mod:`pat_middleware.redis_plans`: all under
``prefix``, with the token id as a hash tag (``<prefix>{<id>}:...``) so that
one id's keys share a cluster slot. A tombstone left by each invalidation
keeps a cold verification that read the store just before a revocation
from putting the stale entry back.

Every method raises :class:`~pat_middleware.cache.CacheUnavailable`, never
a redis exception, when Redis cannot answer (timeouts default to 0.25 s);
the core then falls back to the store. An outage is logged once (logger
``pat_middleware.redis``), not per call. Invalidations and the change
feed's deletes (``forget``) that cannot be sent are kept in memory and
re-sent when Redis is reachable again; until then this process ignores the
shared entries of those ids (another process, or a Cluster node that was
down, may still serve them).

Besides one server, the cache runs over Redis Sentinel and Redis Cluster
(``redis+sentinel://`` and ``redis+cluster://`` URLs, or
:meth:`RedisCache.from_sentinel` / :meth:`RedisCache.from_cluster`; see
:mod:`pat_middleware.redis_topology`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis
import redis.asyncio
from redis.connection import AbstractConnection

from pat_middleware import defaults, limits
from pat_middleware.cache import CacheUnavailable
from pat_middleware.redis_channel import InvalidationListener
from pat_middleware.redis_exec import (
    ERRORS,
    Clients,
    ConnectionMaker,
    Executor,
    Topology,
    async_method,
    is_unavailable,
    sync_method,
)
from pat_middleware.redis_plans import CachePlans
from pat_middleware.redis_topology import ClusterTopology, SentinelTopology, topology_from_url

__all__ = ["AsyncRedisCache", "CachePlans", "RedisCache"]

logger = logging.getLogger("pat_middleware.redis")

#: Most invalidations kept for re-sending while Redis is unreachable.
MAX_PENDING = 100_000


class _Outage:
    """Turns redis errors into :class:`CacheUnavailable`, logs once per outage, and
    fails fast during one: after a failure, calls skip Redis for ``retry_after``
    seconds (then one is let through to probe), so an outage does not cost each
    request a timeout."""

    def __init__(self, retry_after: float = 1.0, on_recovered: Callable[[], None] = lambda: None) -> None:
        self.down = False
        self.retry_after = retry_after
        self._on_recovered = on_recovered
        self._retry_at = 0.0
        self._lock = threading.Lock()

    def blocked(self) -> bool:
        if not self.down:
            return False
        now = time.monotonic()
        with self._lock:
            if now < self._retry_at:
                return True
            self._retry_at = now + self.retry_after  # this caller probes; the others keep skipping
            return False

    def due(self) -> bool:
        """True unless an outage is being waited out: a call now would go to Redis."""
        return not self.down or time.monotonic() >= self._retry_at

    def ok(self) -> None:
        if self.down:
            with self._lock:
                if self.down:
                    self.down = False
                    logger.warning("Redis cache reachable again")
            self._on_recovered()

    def failed(self, exc: Exception) -> BaseException:
        if not is_unavailable(exc):  # a bad reply, not an outage: fail this call only
            return CacheUnavailable(f"Redis cache error ({type(exc).__name__})")
        with self._lock:
            # Only the failure that starts an outage arms the timer: later ones (calls
            # skipped meanwhile, in flight, or the probe, armed when let through) must
            # not push the next probe back, or steady traffic would never probe again.
            if not self.down:
                self._retry_at = time.monotonic() + self.retry_after
                self.down = True
                logger.warning(
                    "Redis cache unavailable (%s: %s); verifying against the store until it returns",
                    type(exc).__name__,
                    exc,
                )
        return CacheUnavailable(f"Redis cache unavailable ({type(exc).__name__})")


class RedisCache:
    """The shared verification cache and invalidation channel over Redis.

    ``url`` is used for whichever of ``client`` (sync) and ``async_client``
    is not given; clients passed in are not closed by :meth:`close`. Besides
    ``redis://``, ``rediss://`` and ``unix://``, ``url`` may name a Sentinel
    service (``redis+sentinel://host:26379,host:26380/mymaster/0``) or a
    Cluster (``redis+cluster://host:6379,host:6380``); ``topology`` (from
    :meth:`from_sentinel` and :meth:`from_cluster`) is the same without a URL.
    ``socket_timeout`` bounds connects and replies (seconds);
    ``tombstone_ttl`` is how long an invalidated id refuses new positive
    entries; ``ping_interval`` paces the listener's health checks;
    ``retry_after`` is how long calls skip Redis after it failed to answer
    (the listener's successful reconnect ends that at once).
    """

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        prefix: str = defaults.CACHE_PREFIX,
        channel: str | None = None,
        socket_timeout: float = 0.25,
        tombstone_ttl: float = 5.0,
        ping_interval: float = 0.5,
        retry_after: float = 1.0,
        client: redis.Redis | None = None,
        async_client: redis.asyncio.Redis | None = None,
        topology: Topology | None = None,
    ) -> None:
        socket_timeout = limits.seconds("socket_timeout", socket_timeout, low=0.001, high=60.0)
        tombstone_ttl = limits.seconds("tombstone_ttl", tombstone_ttl, high=3600.0)
        ping_interval = limits.seconds("ping_interval", ping_interval, low=0.001, high=3600.0)
        retry_after = limits.seconds("retry_after", retry_after, high=3600.0)
        self.plans = CachePlans(
            prefix, channel or prefix + "invalidate", tombstone_ttl, self._lost, self.written_after_for
        )
        self.clients = Clients(url, socket_timeout, client, async_client, topology=topology or topology_from_url(url))
        #: In a Cluster the channel rides on one node, which says nothing of the others.
        self._one_server = not self.clients.topology.cluster
        # A call that finds Redis again wakes the listener from its backoff.
        self._outage = _Outage(retry_after, lambda: self._listener.poke())
        #: Sends the plans, for this cache and its async twin.
        self.executor = Executor(
            lambda: self.clients.sync, self.clients.asyncio, self._outage, cluster=not self._one_server
        )
        self._channel_server: ConnectionMaker | None = None
        self._async: AsyncRedisCache | None = None
        #: Ids whose delete could not be sent: True while their message is unpublished
        #: too (an invalidation), False for a forget (the change feed's delete).
        self._pending: dict[str, bool] = {}
        self._pending_lock = threading.Lock()
        self._closed = False
        #: Redis server time (ms) of this process's last resubscription after the
        #: channel was lost: positive entries written before it are not trusted.
        self._trusted_since = 0.0
        self._listener = InvalidationListener(
            self._pubsub_connection,
            self.plans.channel,
            before_ready=self._before_ready,
            on_pong=self._on_pong,
            ping_interval=ping_interval,
        )

    @classmethod
    def from_sentinel(
        cls,
        sentinels: list[tuple[str, int]],
        service: str,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        sentinel_username: str | None = None,
        sentinel_password: str | None = None,
        ssl: bool = False,
        **options: Any,
    ) -> RedisCache:
        """The cache on the primary that Redis Sentinel names for ``service``.

        ``sentinels`` are (host, port) pairs; ``username``/``password`` are the
        data nodes', ``sentinel_username``/``sentinel_password`` the sentinels'
        (when they require their own); ``ssl`` uses TLS to both. ``options``
        are :class:`RedisCache`'s (``prefix``, ``socket_timeout``...). Every new
        connection, the invalidation channel's included, asks the sentinels for
        the current primary, so a failover needs no restart.
        """
        topology = SentinelTopology(
            sentinels,
            service,
            db=db,
            username=username,
            password=password,
            sentinel_username=sentinel_username,
            sentinel_password=sentinel_password,
            ssl=ssl,
        )
        return cls(topology=topology, **options)

    @classmethod
    def from_cluster(
        cls,
        nodes: list[tuple[str, int]],
        *,
        username: str | None = None,
        password: str | None = None,
        ssl: bool = False,
        **options: Any,
    ) -> RedisCache:
        """The cache on a Redis Cluster reached through any of ``nodes`` ((host, port) pairs).

        Commands go to the master of their keys' slot; invalidations are
        published to, and heard from, any live node. ``options`` are
        :class:`RedisCache`'s.
        """
        return cls(topology=ClusterTopology(nodes, username=username, password=password, ssl=ssl), **options)

    def __repr__(self) -> str:
        return f"RedisCache(prefix={self.plans.prefix!r}, subscribed={self.subscribed})"

    @property
    def channel(self) -> str:
        """The invalidation channel's name."""
        return self.plans.channel

    @property
    def async_cache(self) -> AsyncRedisCache:
        """The :class:`~pat_middleware.cache.AsyncSharedCache` view (same keys, same listener)."""
        if self._async is None:
            self._async = AsyncRedisCache(self)
        return self._async

    # -- SharedCache ------------------------------------------------------------
    @property
    def subscribed(self) -> bool:
        """True while invalidation messages are being received."""
        return self._listener.subscribed

    def listen(self, on_invalidate: Callable[[list[str]], None], on_reconnect: Callable[[], None]) -> None:
        """Start (once) the listener thread; never blocks, never raises."""
        self._start_listener(on_invalidate, on_reconnect)

    lookup = sync_method(CachePlans.lookup)

    @property
    def written_after(self) -> float:
        """Positive entries are trusted only when written after this (server ms).

        Infinite while the invalidation channel is lost; after it comes back,
        the server time of the resubscription: an entry written before an
        outage may stand for a token revoked during it (its invalidation
        could not be delivered), so it is never trusted after the outage.
        """
        return math.inf if self._listener.lost else self._trusted_since

    def written_after_for(self, token_id: str) -> float:
        """:attr:`written_after` for one id: infinite while this process could not
        delete the id's entry yet (it knows the entry stands for a change it has
        seen: a Cluster node or a blip may have kept it from everyone else)."""
        return math.inf if token_id in self._pending else self.written_after

    store = sync_method(CachePlans.store)
    fail = sync_method(CachePlans.fail)
    admit = sync_method(CachePlans.admit)
    refund = sync_method(CachePlans.refund)
    invalidate = sync_method(CachePlans.invalidate)
    forget = sync_method(CachePlans.forget)
    claim_touch = sync_method(CachePlans.claim_touch)

    def close(self) -> None:
        """Stop the listener thread (joined) and close the sync client. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._listener.stop()
        self.clients.close_sync()

    # -- lost invalidations -----------------------------------------------------
    @property
    def pending_invalidations(self) -> list[str]:
        """Ids whose invalidation (delete and message) could not be sent yet."""
        return [token_id for token_id, publish in list(self._pending.items()) if publish]

    @property
    def pending_deletes(self) -> list[str]:
        """Ids whose shared entries could not be deleted yet (invalidations and
        forgets): :meth:`lookup` ignores their entries until they are."""
        return list(self._pending)

    def _lost(self, token_ids: Iterable[str], publish: bool = True) -> None:
        with self._pending_lock:
            for token_id in token_ids:
                self._pending[token_id] = self._pending.get(token_id, False) or publish
            while len(self._pending) > MAX_PENDING:
                dropped = next(iter(self._pending))
                del self._pending[dropped]
                logger.error("too many unsent invalidations; dropped token id %s", dropped)
        # The listener thread re-sends them once Redis answers again.
        self._start_listener()

    def _start_listener(
        self,
        on_invalidate: Callable[[list[str]], None] | None = None,
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        if self._closed:
            return
        try:
            self._listener.start(on_invalidate, on_reconnect)
        except Exception:  # e.g. no thread can be started: stay unsubscribed (short local TTL)
            logger.exception("could not start the Redis invalidation listener")

    def _before_ready(self) -> None:
        # The listener reached Redis again: stop failing fast; after a loss, distrust
        # every entry written before now (server time, the clock the entries carry,
        # asked of the server the channel subscribed to).
        if self._one_server:
            self._outage.ok()
        if self._listener.lost:
            self._trusted_since = self._server_time()
        if self._one_server:
            self._resend_pending()
        else:
            self._resend_pending_to_cluster()

    def _on_pong(self) -> None:
        # Redis answers the channel: stop failing fast, and re-send invalidations lost
        # in a blip too short to break the channel (they must not wait for a reconnect).
        if self._one_server:
            self._outage.ok()
            self._resend_pending()
        else:
            self._resend_pending_to_cluster()

    def _resend_pending_to_cluster(self) -> None:
        # A Cluster node's answer says nothing of the other nodes: the re-send is a
        # probe like any call (at most one per retry_after during an outage, even in
        # a process that makes no other call); a failure waits for a later health
        # check and never breaks the channel (its node is fine).
        if self._pending and self._outage.due():
            with contextlib.suppress(CacheUnavailable):
                self._resend_pending()

    def _server_time(self) -> float:
        """The channel's server's clock (ms), over a connection of its own."""
        maker = self._channel_server or self.clients.channel_server()
        connection: Any = maker()  # redis-py's connection methods are untyped
        try:
            connection.connect()
            connection.send_command("TIME")
            seconds, micros = connection.read_response()
        finally:
            connection.disconnect()
        return int(seconds) * 1000 + int(micros) // 1000

    def _resend_pending(self) -> None:
        if not self._pending:
            return
        with self._pending_lock:
            pending = dict(self._pending)
        for publish in (True, False):
            ids = [token_id for token_id, flag in pending.items() if flag is publish]
            if not ids:
                continue
            self.executor.run((self.plans.invalidate if publish else self.plans.forget)(ids))
            with self._pending_lock:
                for token_id in ids:
                    if self._pending.get(token_id) is publish:  # not lost again meanwhile
                        del self._pending[token_id]
            what = "invalidations" if publish else "deletes"
            logger.warning("re-sent %d %s lost while Redis was unreachable", len(ids), what)

    def _pubsub_connection(self) -> AbstractConnection:
        # A dedicated connection with no retries and RESP2, to the server the
        # topology names now (the Sentinel primary; the next Cluster node).
        try:
            self._channel_server = self.clients.channel_server()
        except ERRORS as exc:  # e.g. no sentinel names a primary (mid-failover)
            raise redis.ConnectionError(f"no server for the invalidation channel ({type(exc).__name__})") from exc
        return self._channel_server()


class AsyncRedisCache:
    """The asyncio twin of :class:`RedisCache`: the same plans and executor, awaited;
    the same listener."""

    def __init__(self, parent: RedisCache) -> None:
        self._parent = parent
        self.plans = parent.plans
        self.executor = parent.executor

    def __repr__(self) -> str:
        return f"AsyncRedisCache(prefix={self.plans.prefix!r})"

    @property
    def subscribed(self) -> bool:
        """True while invalidation messages are being received."""
        return self._parent.subscribed

    def listen(self, on_invalidate: Callable[[list[str]], None], on_reconnect: Callable[[], None]) -> None:
        """Start (once) the listener thread shared with the sync cache."""
        self._parent.listen(on_invalidate, on_reconnect)

    lookup = async_method(CachePlans.lookup)
    store = async_method(CachePlans.store)
    fail = async_method(CachePlans.fail)
    admit = async_method(CachePlans.admit)
    refund = async_method(CachePlans.refund)
    invalidate = async_method(CachePlans.invalidate)
    forget = async_method(CachePlans.forget)
    claim_touch = async_method(CachePlans.claim_touch)

    async def close(self) -> None:
        """Close this event loop's client, then the sync side (listener, client). Idempotent."""
        await self._parent.clients.close_async()
        await asyncio.to_thread(self._parent.close)
