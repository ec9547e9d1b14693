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

Where the clients connect is a
:class:`~pat_middleware.redis_clients.Topology`: one server, a
Sentinel-managed primary or a Cluster (:mod:`pat_middleware.redis_clients`,
:mod:`pat_middleware.redis_topology`). Over a Cluster, a plan's keyed
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

import contextlib
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import redis
import redis.asyncio
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

from .redis_clients import (
    Clients,
    ConnectionMaker,
    SingleServer,
    Topology,
    async_client,
    connection_options,
    sync_client,
)

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
