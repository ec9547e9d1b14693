"""Redis command plans and the thin sync/async executors that run them.

A :class:`Plan` is one round trip to Redis, built once by pure code: the
commands to send (one command, or several pipelined), the Lua scripts they
call and a parser for the replies. :class:`SyncExecutor` and
:class:`AsyncExecutor` only send a plan and hand the replies to its parser,
so no key layout or command sequence is written twice. Scripts are called
with ``EVALSHA`` and loaded on a ``NOSCRIPT`` reply (after a restart or a
``SCRIPT FLUSH``), then the plan is sent once more: plans that call scripts
must therefore be safe to repeat (every plan here is: a lone script call
that got ``NOSCRIPT`` ran nothing).

Clients made here never retry on their own: redis-py's default retry
policy (several attempts with backoff) would turn a dead server into a
multi-second stall, and retrying a write whose reply was lost could apply
it twice. Callers decide what a failure means.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import MaxConnectionsError, NoScriptError, RedisError, ResponseError
from redis.retry import Retry

__all__ = [
    "ERRORS",
    "AsyncExecutor",
    "Clients",
    "Command",
    "Health",
    "Plan",
    "Script",
    "SyncExecutor",
    "async_client",
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

#: What a Redis call may raise (redis-py wraps most socket errors, not all).
ERRORS = (RedisError, OSError)

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
    the result. ``on_failure`` runs when the plan failed: not sent, or answered
    with an error (a reply error also means the writes were not applied)."""

    commands: tuple[Command, ...]
    parse: Callable[[list[Any]], T]
    scripts: tuple[Script, ...] = ()
    on_failure: Callable[[], None] | None = None


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
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith(_UNAVAILABLE_REPLIES)


def _retry_options(socket_timeout: float) -> dict[str, Any]:
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
        **_retry_options(socket_timeout),
    )
    return redis.Redis.from_pool(pool)


def async_client(url: str, socket_timeout: float) -> redis.asyncio.Redis:
    """The asyncio twin of :func:`sync_client` (hiredis is used when installed)."""
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=max(socket_timeout, POOL_WAIT),
        retry=AsyncRetry(NoBackoff(), 0),
        **_retry_options(socket_timeout),
    )
    return redis.asyncio.Redis.from_pool(pool)


class Clients:
    """The sync client and the asyncio clients of one Redis-backed object.

    An asyncio connection belongs to the event loop that opened it, and a
    process may run several loops in turn (``asyncio.run`` per test,
    Starlette's ``TestClient``...). So, unless one was given, an asyncio
    client is made per running loop, on first use in that loop; clients of
    loops that have closed are dropped. Clients passed in belong to the
    caller: they are never closed here.
    """

    def __init__(
        self,
        url: str,
        socket_timeout: float,
        client: redis.Redis | None = None,
        async_client: redis.asyncio.Redis | None = None,
    ) -> None:
        self.url = url
        self.socket_timeout = socket_timeout
        self._owns_sync = client is None
        self.sync = client if client is not None else sync_client(url, socket_timeout)
        self._given_async = async_client
        self._by_loop: dict[asyncio.AbstractEventLoop, redis.asyncio.Redis] = {}
        self._lock = threading.Lock()

    def asyncio(self) -> redis.asyncio.Redis:
        """The asyncio client for the running event loop."""
        if self._given_async is not None:
            return self._given_async
        loop = asyncio.get_running_loop()
        client = self._by_loop.get(loop)
        if client is None:
            with self._lock:
                for old in [old for old in self._by_loop if old.is_closed()]:
                    del self._by_loop[old]
                client = self._by_loop[loop] = async_client(self.url, self.socket_timeout)
        return client

    def close_sync(self) -> None:
        """Close the sync client if it was made here."""
        if self._owns_sync:
            self.sync.close()

    async def close_async(self) -> None:
        """Close the asyncio client made here for the running loop."""
        client = self._by_loop.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()


class _Executor:
    """What both executors share: reporting to the health object."""

    def __init__(self, health: Health) -> None:
        self._health = health

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


class SyncExecutor(_Executor):
    """Sends plans over a sync client."""

    def __init__(self, client: redis.Redis, health: Health) -> None:
        super().__init__(health)
        self.client = client

    def run(self, plan: Plan[T]) -> T:
        """Send ``plan`` and parse the replies."""
        if (blocked := self._blocked(plan)) is not None:
            raise blocked
        try:
            replies = self._send(plan)
        except ERRORS as exc:
            raise self._failure(plan, exc) from exc
        return self._success(plan, replies)

    def _send(self, plan: Plan[Any]) -> list[Any]:
        try:
            return self._pipeline(plan.commands)
        except NoScriptError:
            for script in plan.scripts:
                self.client.script_load(script.source)
            return self._pipeline(plan.commands)

    def _pipeline(self, commands: tuple[Command, ...]) -> list[Any]:
        client: Any = self.client  # redis-py leaves execute_command untyped
        if len(commands) == 1:
            return [client.execute_command(*commands[0])]
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(pipe.execute())


class AsyncExecutor(_Executor):
    """Sends plans over the ``redis.asyncio`` client that ``client()`` returns
    (one per event loop, see :class:`Clients`); the mirror of :class:`SyncExecutor`."""

    def __init__(self, client: Callable[[], redis.asyncio.Redis], health: Health) -> None:
        super().__init__(health)
        self.client = client

    async def run(self, plan: Plan[T]) -> T:
        """Send ``plan`` and parse the replies."""
        if (blocked := self._blocked(plan)) is not None:
            raise blocked
        try:
            replies = await self._send(plan)
        except ERRORS as exc:
            raise self._failure(plan, exc) from exc
        return self._success(plan, replies)

    async def _send(self, plan: Plan[Any]) -> list[Any]:
        try:
            return await self._pipeline(plan.commands)
        except NoScriptError:
            for script in plan.scripts:
                await self.client().script_load(script.source)
            return await self._pipeline(plan.commands)

    async def _pipeline(self, commands: tuple[Command, ...]) -> list[Any]:
        client: Any = self.client()  # redis-py leaves execute_command untyped
        if len(commands) == 1:
            return [await client.execute_command(*commands[0])]
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute())
