"""Redis command plans and the one executor that sends them, sync or async.

A :class:`Plan` is one round trip to Redis, built by pure code: the
commands to send (one command, or several pipelined), the Lua scripts they
call and a parser for the replies; ``Plan[T]`` is typed by what its parser
returns. :class:`Executor` sends a plan and hands the replies to its parser
(:meth:`Executor.run` for sync callers, :meth:`Executor.arun` for async
ones; what a round trip does is written once, as a generator of I/O steps
that each method drives), so no key layout, command sequence or failure
rule is written twice. The scripts' Lua is package data
(``pat_middleware/lua/*.lua``, see :func:`lua`). Scripts are called
with ``EVALSHA``; on a ``NOSCRIPT`` reply (after a restart, a failover or a
``SCRIPT FLUSH``) the plan is sent once more with ``EVAL`` and the scripts'
source, which also caches them on whichever server ran them (in a Cluster,
only the nodes that need them). Plans that call scripts must therefore be
safe to repeat (every plan here is: a lone script call that got
``NOSCRIPT`` ran nothing).

Where the clients connect is a
:class:`~pat_middleware.redis.clients.Topology`: one server, a
Sentinel-managed primary or a Cluster (:mod:`pat_middleware.redis.clients`,
:mod:`pat_middleware.redis.topology`). Over a Cluster, a plan's keyed
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
import importlib.resources
import time
from collections.abc import Callable, Coroutine, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Concatenate, Generic, NamedTuple, ParamSpec, Protocol, TypeVar

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

from pat_middleware.redis.clients import (
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
    "Clients",
    "Command",
    "ConnectionMaker",
    "Executor",
    "Health",
    "Plan",
    "Script",
    "SingleServer",
    "Steps",
    "Topology",
    "async_client",
    "async_method",
    "async_steps",
    "connection_options",
    "is_unavailable",
    "lua",
    "sync_client",
    "sync_method",
    "sync_steps",
]

T = TypeVar("T")
P = ParamSpec("P")
S = TypeVar("S")
S_co = TypeVar("S_co", covariant=True)

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


def lua(*names: str) -> Script:
    """The script made of the package's Lua files ``names``, in order
    (``lua("store_common", "store_list")``: ``pat_middleware/lua/store_common.lua``
    then ``store_list.lua``).

    Not redis-py's ``register_script``: its pipelines ask ``SCRIPT EXISTS`` before
    every execute (one more round trip per invalidation) and its Cluster
    pipelines cannot load scripts; here a ``NOSCRIPT`` reply is answered with
    ``EVAL`` in the same call (see the module docstring).
    """
    folder = importlib.resources.files(__package__) / "lua"
    return Script("\n".join((folder / f"{name}.lua").read_text(encoding="utf-8") for name in names))


class Plan(NamedTuple, Generic[T]):
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


@dataclass(frozen=True, slots=True)
class _Send:
    """One I/O step of a round trip: send ``commands`` (pipelined when more than
    one), or the one keyless command to the Cluster node ``node``; the reply is
    the list of replies (a single reply for ``node``)."""

    commands: tuple[Command, ...]
    node: Any = None


#: The I/O step that asks for a Cluster's nodes (the client's own node objects).
_NODES = _Send(())

#: A round trip as a generator: yields the I/O steps, receives their replies.
_Trip = Generator[_Send, Any, T]


class Executor:
    """Sends plans to Redis, for sync callers (:meth:`run`) and async ones (:meth:`arun`).

    What a round trip does (fail fast while ``health`` says so, ``EVALSHA``
    then ``EVAL`` on ``NOSCRIPT``, a Cluster's broadcasts to one live node,
    reporting to ``health``) is written once, as a generator of :class:`_Send`
    steps (:meth:`_trip`): :meth:`run` performs each step on the sync client
    that ``sync_client()`` returns, :meth:`arun` awaits it on the asyncio
    client that ``async_client()`` returns (one per event loop, see
    :class:`Clients`). A plan of one command to one server (a lookup, a store
    read, most scripts) is sent at once, without the generator.
    """

    def __init__(
        self,
        sync_client: Callable[[], Any],
        async_client: Callable[[], Any],
        health: Health,
        *,
        cluster: bool = False,
    ) -> None:
        self._sync_client = sync_client
        self._async_client = async_client
        self._health = health
        self.cluster = cluster
        self._last_node: str | None = None  # the node the last broadcast reached
        #: Called with each answered plan's seconds (set by :mod:`pat_middleware.metrics`).
        self.on_round_trip: Callable[[float], None] | None = None

    # -- the two drivers ----------------------------------------------------------
    def run(self, plan: Plan[T]) -> T:
        """Send ``plan`` and parse the replies (an empty plan sends nothing)."""
        if not (plan.commands or plan.broadcast):
            return plan.parse([])
        started = time.perf_counter()
        blocked = self._health.blocked()
        if not blocked and len(plan.commands) == 1 and not plan.broadcast and not self.cluster:
            try:
                try:
                    reply = self._sync_client().execute_command(*plan.commands[0])
                except NoScriptError:
                    reply = self._sync_client().execute_command(*with_source(plan.commands, plan.scripts)[0])
            except ERRORS as exc:
                raise self._failure(plan, exc) from exc
            return self._success(plan, [reply], started)
        client = self._sync_client
        trip = self._trip(plan, blocked, started)
        send: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = trip.throw(error) if error is not None else trip.send(send)
            except StopIteration as stop:
                result: T = stop.value
                return result
            try:
                if step is _NODES:
                    send, error = list(client().get_nodes()), None
                elif step.node is not None:
                    send, error = client().execute_command(*step.commands[0], target_nodes=step.node), None
                elif len(step.commands) == 1:
                    send, error = [client().execute_command(*step.commands[0])], None
                else:
                    pipe = client().pipeline(transaction=False)
                    for command in step.commands:
                        pipe.execute_command(*command)
                    send, error = list(pipe.execute()), None
            except Exception as exc:
                send, error = None, exc

    async def arun(self, plan: Plan[T]) -> T:
        """:meth:`run` for async callers: the same steps, awaited."""
        if not (plan.commands or plan.broadcast):
            return plan.parse([])
        started = time.perf_counter()
        blocked = self._health.blocked()
        if not blocked and len(plan.commands) == 1 and not plan.broadcast and not self.cluster:
            try:
                try:
                    reply = await self._async_client().execute_command(*plan.commands[0])
                except NoScriptError:
                    reply = await self._async_client().execute_command(*with_source(plan.commands, plan.scripts)[0])
            except ERRORS as exc:
                raise self._failure(plan, exc) from exc
            return self._success(plan, [reply], started)
        client = self._async_client
        trip = self._trip(plan, blocked, started)
        send: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = trip.throw(error) if error is not None else trip.send(send)
            except StopIteration as stop:
                result: T = stop.value
                return result
            try:
                if step is _NODES:
                    send, error = list(client().get_nodes()), None
                elif step.node is not None:
                    send, error = await client().execute_command(*step.commands[0], target_nodes=step.node), None
                elif len(step.commands) == 1:
                    send, error = [await client().execute_command(*step.commands[0])], None
                else:
                    pipe = client().pipeline(transaction=False)
                    for command in step.commands:
                        pipe.execute_command(*command)
                    send, error = list(await pipe.execute()), None
            except Exception as exc:
                send, error = None, exc

    # -- the round trip, written once ---------------------------------------------------
    def _trip(self, plan: Plan[T], blocked: bool, started: float) -> _Trip[T]:
        if blocked:
            if self.cluster and plan.broadcast:  # the channel may well work (see _send)
                with contextlib.suppress(*ERRORS):
                    yield from self._broadcast(plan.broadcast)
            cause = redis.ConnectionError("Redis marked unreachable; retrying shortly")
            raise self._failure(plan, cause) from cause
        try:
            replies = yield from self._send(plan)
        except ERRORS as exc:
            raise self._failure(plan, exc) from exc
        return self._success(plan, replies, started)

    def _send(self, plan: Plan[Any]) -> _Trip[list[Any]]:
        if not self.cluster:
            return (yield from self._keyed(plan.commands + plan.broadcast, plan.scripts))
        try:
            replies = yield from self._keyed(plan.commands, plan.scripts)
        except ERRORS:
            # Other processes must hear of an invalidation even when a node
            # holding some of its keys is down.
            with contextlib.suppress(*ERRORS):
                yield from self._broadcast(plan.broadcast)
            raise
        return replies + (yield from self._broadcast(plan.broadcast))

    @staticmethod
    def _keyed(commands: tuple[Command, ...], scripts: tuple[Script, ...]) -> _Trip[list[Any]]:
        if not commands:
            return []
        try:
            replies: list[Any] = yield _Send(commands)
        except NoScriptError:
            replies = yield _Send(with_source(commands, scripts))
        return replies

    def _broadcast(self, commands: tuple[Command, ...]) -> _Trip[list[Any]]:
        replies = []
        for command in commands:
            error: BaseException | None = None
            for node in (yield from self._nodes()):
                try:
                    replies.append((yield _Send((command,), node)))
                except ERRORS as exc:
                    error = exc
                    continue
                self._last_node = node.name
                break
            else:
                raise error or RedisClusterException("no Redis Cluster node known")
        return replies

    def _nodes(self) -> _Trip[list[Any]]:
        """A Cluster's nodes, the one the last broadcast reached first."""
        nodes: list[Any] = yield _NODES
        nodes.sort(key=lambda node: node.name != self._last_node)
        return nodes

    def _failure(self, plan: Plan[Any], exc: Exception) -> BaseException:
        if plan.on_failure is not None:
            plan.on_failure()
        return self._health.failed(exc)

    def _success(self, plan: Plan[T], replies: list[Any], started: float) -> T:
        self._health.ok()
        if self.on_round_trip is not None:
            self.on_round_trip(time.perf_counter() - started)
        return plan.parse(replies)


# -- sync and async classes made from one set of plan builders ------------------------------
class Planned(Protocol[S_co]):
    """What :func:`sync_method` and :func:`async_method` need of the object they
    are methods of: its plan builders, and the executor that sends the plans."""

    @property
    def plans(self) -> S_co: ...

    @property
    def executor(self) -> Executor: ...


def sync_method(build: Callable[Concatenate[S, P], Plan[T]]) -> Callable[Concatenate[Planned[S], P], T]:
    """The method that sends the plan ``build`` makes and returns its result:
    ``get = sync_method(StorePlans.get)`` in ``RedisStore``, with ``build``'s
    signature (less ``self``) and docstring."""

    def method(self: Planned[S], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.executor.run(build(self.plans, *args, **kwargs))

    method.__name__, method.__qualname__, method.__doc__ = build.__name__, build.__name__, build.__doc__
    return method


def async_method(
    build: Callable[Concatenate[S, P], Plan[T]],
) -> Callable[Concatenate[Planned[S], P], Coroutine[Any, Any, T]]:
    """:func:`sync_method` for an async class: the same plan, awaited."""

    async def method(self: Planned[S], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.executor.arun(build(self.plans, *args, **kwargs))

    method.__name__, method.__qualname__, method.__doc__ = build.__name__, build.__name__, build.__doc__
    return method


#: An operation of several round trips: a generator that yields plans and gets their results.
Steps = Generator[Plan[Any], Any, T]


def sync_steps(build: Callable[Concatenate[S, P], Steps[T]]) -> Callable[Concatenate[Planned[S], P], T]:
    """:func:`sync_method` for an operation of several round trips: each plan
    ``build`` yields is sent, and its result sent back, until it returns."""

    def method(self: Planned[S], /, *args: P.args, **kwargs: P.kwargs) -> T:
        steps, result = build(self.plans, *args, **kwargs), None
        while True:
            try:
                plan = steps.send(result)
            except StopIteration as stop:
                done: T = stop.value
                return done
            result = self.executor.run(plan)

    method.__name__, method.__qualname__, method.__doc__ = build.__name__, build.__name__, build.__doc__
    return method


def async_steps(
    build: Callable[Concatenate[S, P], Steps[T]],
) -> Callable[Concatenate[Planned[S], P], Coroutine[Any, Any, T]]:
    """:func:`sync_steps` for an async class: the same plans, awaited."""

    async def method(self: Planned[S], /, *args: P.args, **kwargs: P.kwargs) -> T:
        steps, result = build(self.plans, *args, **kwargs), None
        while True:
            try:
                plan = steps.send(result)
            except StopIteration as stop:
                done: T = stop.value
                return done
            result = await self.executor.arun(plan)

    method.__name__, method.__qualname__, method.__doc__ = build.__name__, build.__name__, build.__doc__
    return method
