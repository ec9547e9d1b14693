"""Redis clients: the settings every client shares, and where they connect.

:class:`Clients` holds the sync client and the per-event-loop asyncio
clients of one Redis-backed object; a :class:`Topology` says where they
connect: one server (:class:`SingleServer`, here), a Sentinel-managed
primary or a Cluster (:mod:`pat_middleware.redis.topology`).

Clients made here never retry on their own (see
:mod:`pat_middleware.redis.executor`) and wait a bounded time for a pooled
connection.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, Protocol

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.connection import AbstractConnection
from redis.retry import Retry

__all__ = [
    "MAX_CONNECTIONS",
    "POOL_WAIT",
    "Clients",
    "ConnectionMaker",
    "SingleServer",
    "Topology",
    "async_client",
    "connection_options",
    "sync_client",
]

#: Connections one client keeps at most (callers beyond wait for one, up to POOL_WAIT).
MAX_CONNECTIONS = 64
#: Longest wait for a free connection (a burst of cold verifications queues for them).
POOL_WAIT = 1.0


def connection_options(socket_timeout: float) -> dict[str, Any]:
    """Connection settings every client made here shares: short timeouts, no
    health checks, RESP2 (``retry`` is added per client type)."""
    return {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "health_check_interval": 0,
        "protocol": 2,
    }


def sync_client(url: str, socket_timeout: float) -> redis.Redis:
    """A sync client for ``url`` with short timeouts and no automatic retries.

    Its pool holds at most :data:`MAX_CONNECTIONS`; a caller finding them all
    busy waits up to :data:`POOL_WAIT` for one (redis-py's default pool
    refuses at once, which a burst of cold verifications took for an outage).
    """
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=max(socket_timeout, POOL_WAIT),
        retry=Retry(NoBackoff(), 0),
        **connection_options(socket_timeout),
    )
    return redis.Redis.from_pool(pool)


def async_client(url: str, socket_timeout: float) -> redis.asyncio.Redis:
    """The asyncio twin of :func:`sync_client` (hiredis is used when installed)."""
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=max(socket_timeout, POOL_WAIT),
        retry=AsyncRetry(NoBackoff(), 0),
        **connection_options(socket_timeout),
    )
    return redis.asyncio.Redis.from_pool(pool)


#: Makes a new, unconnected connection to one server (each call: a new connection).
ConnectionMaker = Callable[[], AbstractConnection]


class Topology(Protocol):
    """Where the clients of one Redis-backed object connect."""

    #: True for a Redis Cluster: keyed commands are routed per slot, and one
    #: node answering says nothing about the others.
    cluster: bool

    def sync_client(self, socket_timeout: float) -> Any:
        """A new sync client (``redis.Redis`` or ``RedisCluster``), with no retries."""
        ...

    def async_client(self, socket_timeout: float) -> Any:
        """A new asyncio client for the running event loop."""
        ...

    def channel_server(self, clients: Clients) -> ConnectionMaker:
        """Connections to the server the invalidation channel should use now
        (asked again on every reconnect: after a failover it names another)."""
        ...

    def close(self) -> None:
        """Release what the topology itself holds (Sentinel connections)."""
        ...

    async def aclose(self, client: Any) -> None:
        """Close an asyncio client made by :meth:`async_client`."""
        ...


class SingleServer:
    """One Redis server at a ``redis://``, ``rediss://`` or ``unix://`` URL."""

    cluster = False

    def __init__(self, url: str) -> None:
        self.url = url

    def sync_client(self, socket_timeout: float) -> redis.Redis:
        return sync_client(self.url, socket_timeout)

    def async_client(self, socket_timeout: float) -> redis.asyncio.Redis:
        return async_client(self.url, socket_timeout)

    def channel_server(self, clients: Clients) -> ConnectionMaker:
        # Connections like the sync client's (a client passed in included), with
        # no retries and RESP2. A Sentinel-managed client's pool resolves the
        # current primary on each connect.
        pool = clients.sync.connection_pool
        kwargs = dict(pool.connection_kwargs)
        kwargs.update(
            retry=Retry(NoBackoff(), 0),
            protocol=2,
            socket_timeout=clients.socket_timeout,
            socket_connect_timeout=clients.socket_timeout,
            health_check_interval=0,
        )
        connection_class: Callable[..., AbstractConnection] = pool.connection_class
        return lambda: connection_class(**kwargs)

    def close(self) -> None:
        pass

    async def aclose(self, client: Any) -> None:
        await client.aclose()


class Clients:
    """The sync client and the asyncio clients of one Redis-backed object.

    An asyncio connection belongs to the event loop that opened it, and a
    process may run several loops in turn (``asyncio.run`` per test,
    Starlette's ``TestClient``...). So, unless one was given, an asyncio
    client is made per running loop, on first use in that loop; clients of
    loops that have closed are dropped. A Cluster's sync client is made on
    first use too (it reads the cluster's layout when made, so it may fail:
    the first call then fails like any other). Clients passed in
    belong to the caller: they are never closed here. ``topology`` says
    where to connect (by default the single server at ``url``).
    """

    def __init__(
        self,
        url: str,
        socket_timeout: float,
        client: redis.Redis | None = None,
        async_client: redis.asyncio.Redis | None = None,
        *,
        topology: Topology | None = None,
    ) -> None:
        self.url = url
        self.topology: Topology = topology if topology is not None else SingleServer(url)
        self.socket_timeout = socket_timeout
        self._owns_sync = client is None
        self._sync: Any = client
        if client is None and not self.topology.cluster:
            # No I/O: made now, so that a malformed URL fails at construction.
            self._sync = self.topology.sync_client(socket_timeout)
        self._given_async = async_client
        self._by_loop: dict[asyncio.AbstractEventLoop, Any] = {}
        self._lock = threading.Lock()

    @property
    def sync(self) -> Any:
        """The sync client (made on first use; may raise one of :data:`ERRORS`)."""
        client = self._sync
        if client is None:
            with self._lock:
                if self._sync is None:
                    self._sync = self.topology.sync_client(self.socket_timeout)
                client = self._sync
        return client

    @property
    def made_sync(self) -> Any:
        """The sync client if it was made already, else None (never connects)."""
        return self._sync

    def asyncio(self) -> Any:
        """The asyncio client for the running event loop."""
        if self._given_async is not None:
            return self._given_async
        loop = asyncio.get_running_loop()
        client = self._by_loop.get(loop)
        if client is None:
            with self._lock:
                for old in [old for old in self._by_loop if old.is_closed()]:
                    del self._by_loop[old]
                client = self._by_loop[loop] = self.topology.async_client(self.socket_timeout)
        return client

    def channel_server(self) -> ConnectionMaker:
        """Connections to the server the invalidation channel should use now."""
        return self.topology.channel_server(self)

    def close_sync(self) -> None:
        """Close the sync client if it was made here, and the topology's own connections."""
        if self._owns_sync and self._sync is not None:
            self._sync.close()
        self.topology.close()

    async def close_async(self) -> None:
        """Close the asyncio client made here for the running loop."""
        client = self._by_loop.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await self.topology.aclose(client)
