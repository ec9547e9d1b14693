"""Redis command plans and the thin sync/async executors that run them.

A :class:`Plan` is one round trip to Redis, built once by pure code: the
commands to send (one command, or several pipelined), the Lua scripts they
call and a parser for the replies. :class:`SyncExecutor` and
:class:`AsyncExecutor` only send a plan and hand the replies to its parser,
so no key layout or command sequence is written twice. Scripts are called
with ``EVALSHA``; on a ``NOSCRIPT`` reply (after a restart, a failover or a
``SCRIPT FLUSH``) the plan is sent once more with ``EVAL`` and the scripts'
source, which also caches them on whichever server ran them (in a Cluster,
only the nodes that need them). Plans that call scripts must therefore be
safe to repeat (every plan here is: a lone script call that got
``NOSCRIPT`` ran nothing).

Where the clients connect is a :class:`Topology`: one server here
(:class:`SingleServer`), a Sentinel-managed primary or a Cluster in
:mod:`pat_middleware.redis_topology`. Over a Cluster, a plan's keyed
commands go through a cluster pipeline (redis-py groups them per node) and
its ``broadcast`` commands (``PUBLISH``, keyless) go to one live node,
tried in turn, and are sent even when the keyed part failed or was skipped
(while the cluster refuses keyed commands, ``CLUSTERDOWN``, its nodes
still relay messages).

Clients made here never retry on their own: redis-py's default retry
policy (several attempts with backoff) would turn a dead server into a
multi-second stall, and retrying a write whose reply was lost could apply
it twice. Callers decide what a failure means.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.connection import AbstractConnection
from redis.exceptions import (
    ClusterDownError,
    MaxConnectionsError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.retry import Retry

__all__ = [
    "ERRORS",
    "AsyncExecutor",
    "Clients",
    "Command",
    "ConnectionMaker",
    "Health",
    "Plan",
    "Script",
    "SingleServer",
    "SyncExecutor",
    "Topology",
    "async_client",
    "connection_options",
    "is_unavailable",
    "sync_client",
]

T = TypeVar("T")

#: One Redis command as sent: name then arguments.
Command = tuple[str | bytes | int | float, ...]

#: Connections one client keeps at most (callers beyond wait for one, up to POOL_WAIT).
MAX_CONNECTIONS = 64
#: Longest wait for a free connection (a burst of cold verifications queues for them).
POOL_WAIT = 1.0
#: What redis-py's blocking pools raise when no connection frees up in time.
_POOL_EXHAUSTED = "No connection available."

#: What a Redis call may raise (redis-py wraps most socket errors, not all; its
#: Cluster client raises ``RedisClusterException``, which is no ``RedisError``,
#: when no node answers or a slot has no live master).
ERRORS = (RedisError, OSError, RedisClusterException)

#: Errors that mean "cannot serve now" whatever their message (redis-py strips
#: the reply's code, e.g. ``CLUSTERDOWN``, from the message of these).
_UNAVAILABLE_TYPES = (
    redis.ConnectionError,
    redis.TimeoutError,
    OSError,
    RedisClusterException,
    ClusterDownError,
    TryAgainError,
    ReadOnlyError,
    OutOfMemoryError,
)

#: Error replies that mean "the server cannot serve this now", not "bad command".
_UNAVAILABLE_REPLIES = (
    "LOADING",
    "BUSY",
    "MASTERDOWN",
    "READONLY",
    "OOM",
    "MISCONF",
    "NOREPLICAS",
    "CLUSTERDOWN",
    "TRYAGAIN",
)


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script, called by its SHA-1."""

    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        sha = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()
        object.__setattr__(self, "sha", sha)

    def call(self, keys: Sequence[str], args: Sequence[str | bytes | int | float]) -> Command:
        """The ``EVALSHA`` command running this script."""
        return ("EVALSHA", self.sha, len(keys), *keys, *args)


@dataclass(frozen=True, slots=True)
class Plan(Generic[T]):
    """One round trip: ``commands`` (pipelined when more than one), the
    ``scripts`` they call, and ``parse``, which turns the list of replies into
    the result. ``broadcast`` holds keyless commands sent after ``commands``
    (``PUBLISH``: any node of a Cluster will do); their replies follow those of
    ``commands``. ``on_failure`` runs when the plan failed: not sent, or
    answered with an error (a reply error also means the writes were not applied)."""

    commands: tuple[Command, ...]
    parse: Callable[[list[Any]], T]
    scripts: tuple[Script, ...] = ()
    on_failure: Callable[[], None] | None = None
    broadcast: tuple[Command, ...] = ()


class Health(Protocol):
    """What an executor reports to: each success, and each failure (which the
    health object turns into the exception to raise)."""

    def ok(self) -> None: ...

    def failed(self, exc: Exception) -> BaseException: ...

    def blocked(self) -> bool:
        """True to fail fast, without I/O (an outage is being waited out)."""
        ...


def is_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` means Redis cannot be reached or cannot serve now.

    All of this process's connections being busy (a burst of concurrent cold
    verifications) is not such an outage: that call fails, the breaker stays closed.
    """
    if isinstance(exc, MaxConnectionsError) or (isinstance(exc, redis.ConnectionError) and str(exc) == _POOL_EXHAUSTED):
        return False
    if isinstance(exc, _UNAVAILABLE_TYPES):
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith(_UNAVAILABLE_REPLIES)


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


def with_source(commands: tuple[Command, ...], scripts: tuple[Script, ...]) -> tuple[Command, ...]:
    """``commands`` with each ``EVALSHA`` of one of ``scripts`` turned into an ``EVAL`` of its source."""
    sources = {script.sha: script.source for script in scripts}
    return tuple(
        ("EVAL", sources[str(command[1])], *command[2:])
        if command[0] == "EVALSHA" and str(command[1]) in sources
        else command
        for command in commands
    )


class _Executor:
    """What both executors share: reporting to the health object, and the
    order in which a Cluster's nodes are tried for broadcasts."""

    def __init__(self, health: Health, cluster: bool) -> None:
        self._health = health
        self.cluster = cluster
        self._last_node: str | None = None  # the node the last broadcast reached

    def _blocked(self, plan: Plan[Any]) -> BaseException | None:
        if not self._health.blocked():
            return None
        cause = redis.ConnectionError("Redis marked unreachable; retrying shortly")
        error = self._failure(plan, cause)
        error.__cause__ = cause
        return error

    def _failure(self, plan: Plan[Any], exc: Exception) -> BaseException:
        if plan.on_failure is not None:
            plan.on_failure()
        return self._health.failed(exc)

    def _success(self, plan: Plan[T], replies: list[Any]) -> T:
        self._health.ok()
        return plan.parse(replies)

    def _nodes(self, client: Any) -> list[Any]:
        """A Cluster's nodes, the one the last broadcast reached first."""
        nodes = list(client.get_nodes())
        nodes.sort(key=lambda node: node.name != self._last_node)
        return nodes


class SyncExecutor(_Executor):
    """Sends plans over the sync client that ``client()`` returns."""

    def __init__(self, client: Callable[[], Any], health: Health, *, cluster: bool = False) -> None:
        super().__init__(health, cluster)
        self.client = client

    def run(self, plan: Plan[T]) -> T:
        """Send ``plan`` and parse the replies."""
        if (blocked := self._blocked(plan)) is not None:
            if self.cluster and plan.broadcast:  # the channel may well work (see _send)
                with contextlib.suppress(*ERRORS):
                    self._broadcast(self.client(), plan.broadcast)
            raise blocked
        try:
            replies = self._send(plan)
        except ERRORS as exc:
            raise self._failure(plan, exc) from exc
        return self._success(plan, replies)

    def _send(self, plan: Plan[Any]) -> list[Any]:
        client = self.client()
        if not self.cluster:
            return self._keyed(client, plan.commands + plan.broadcast, plan.scripts)
        try:
            replies = self._keyed(client, plan.commands, plan.scripts)
        except ERRORS:
            # Other processes must hear of an invalidation even when a node
            # holding some of its keys is down.
            with contextlib.suppress(*ERRORS):
                self._broadcast(client, plan.broadcast)
            raise
        return replies + self._broadcast(client, plan.broadcast)

    def _keyed(self, client: Any, commands: tuple[Command, ...], scripts: tuple[Script, ...]) -> list[Any]:
        try:
            return self._pipeline(client, commands)
        except NoScriptError:
            return self._pipeline(client, with_source(commands, scripts))

    @staticmethod
    def _pipeline(client: Any, commands: tuple[Command, ...]) -> list[Any]:
        if not commands:
            return []
        if len(commands) == 1:
            return [client.execute_command(*commands[0])]
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(pipe.execute())

    def _broadcast(self, client: Any, commands: tuple[Command, ...]) -> list[Any]:
        replies = []
        for command in commands:
            error: BaseException | None = None
            for node in self._nodes(client):
                try:
                    replies.append(client.execute_command(*command, target_nodes=node))
                except ERRORS as exc:
                    error = exc
                    continue
                self._last_node = node.name
                break
            else:
                raise error or RedisClusterException("no Redis Cluster node known")
        return replies


class AsyncExecutor(_Executor):
    """Sends plans over the ``redis.asyncio`` client that ``client()`` returns
    (one per event loop, see :class:`Clients`); the mirror of :class:`SyncExecutor`."""

    def __init__(self, client: Callable[[], Any], health: Health, *, cluster: bool = False) -> None:
        super().__init__(health, cluster)
        self.client = client

    async def run(self, plan: Plan[T]) -> T:
        """Send ``plan`` and parse the replies."""
        if (blocked := self._blocked(plan)) is not None:
            if self.cluster and plan.broadcast:
                with contextlib.suppress(*ERRORS):
                    await self._broadcast(self.client(), plan.broadcast)
            raise blocked
        try:
            replies = await self._send(plan)
        except ERRORS as exc:
            raise self._failure(plan, exc) from exc
        return self._success(plan, replies)

    async def _send(self, plan: Plan[Any]) -> list[Any]:
        client = self.client()
        if not self.cluster:
            return await self._keyed(client, plan.commands + plan.broadcast, plan.scripts)
        try:
            replies = await self._keyed(client, plan.commands, plan.scripts)
        except ERRORS:
            with contextlib.suppress(*ERRORS):
                await self._broadcast(client, plan.broadcast)
            raise
        return replies + await self._broadcast(client, plan.broadcast)

    async def _keyed(self, client: Any, commands: tuple[Command, ...], scripts: tuple[Script, ...]) -> list[Any]:
        try:
            return await self._pipeline(client, commands)
        except NoScriptError:
            return await self._pipeline(client, with_source(commands, scripts))

    @staticmethod
    async def _pipeline(client: Any, commands: tuple[Command, ...]) -> list[Any]:
        if not commands:
            return []
        if len(commands) == 1:
            return [await client.execute_command(*commands[0])]
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute())

    async def _broadcast(self, client: Any, commands: tuple[Command, ...]) -> list[Any]:
        replies = []
        for command in commands:
            error: BaseException | None = None
            for node in self._nodes(client):
                try:
                    replies.append(await client.execute_command(*command, target_nodes=node))
                except ERRORS as exc:
                    error = exc
                    continue
                self._last_node = node.name
                break
            else:
                raise error or RedisClusterException("no Redis Cluster node known")
        return replies
