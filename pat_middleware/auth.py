"""``PATAuth``: the engine the framework edges and the managers stand on.

It wires a store, an optional shared cache (Redis), a hasher and a policy to
the sans-IO :class:`~pat_middleware.core.verifier.Verifier`, and runs the core's
flows through a sync driver (``verify``, ``manager``) and an async driver
(``averify``, ``async_manager``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

from pat_middleware.cache.local import SharedCache
from pat_middleware.config import DEFAULT_STORE_URL, settings_from_env
from pat_middleware.core import defaults, limits
from pat_middleware.core.audit import DEFAULT_RETENTION, SecurityLog
from pat_middleware.core.drivers import AsyncDriver, InThreads, SyncDriver
from pat_middleware.core.events import Event, EventHook, emit
from pat_middleware.core.feed import RevocationFeed
from pat_middleware.core.flights import Flights, PooledHasher
from pat_middleware.core.flow import Flow
from pat_middleware.core.hashing import Argon2Hasher, Hasher
from pat_middleware.core.health import Health, health_flow
from pat_middleware.core.manager import AsyncTokenManager, ManagerFlows, TokenManager
from pat_middleware.core.models import Principal
from pat_middleware.core.policy import Policy
from pat_middleware.core.scopes import ScopeRules
from pat_middleware.core.tokens import DEFAULT_PREFIX, sha256
from pat_middleware.core.verifier import Verifier
from pat_middleware.metrics import instrument
from pat_middleware.stores import store_from_url
from pat_middleware.stores.base import Store

__all__ = ["PATAuth"]

logger = logging.getLogger("pat_middleware")

T = TypeVar("T")


class _LazyPool:
    """A thread pool created on first use (constructing PATAuth starts no thread)."""

    def __init__(self, workers: int, name: str) -> None:
        self.workers, self.name = workers, name
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def __call__(self) -> ThreadPoolExecutor:
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=self.name)
                pool = self._pool
        return pool

    def shutdown(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None


class PATAuth:
    """Verifies tokens and manages them.

    :param store: the source of truth (``SQLiteStore``, ``SQLAlchemyStore``...).
        If it has an ``async_store`` attribute, async code uses that;
        otherwise its calls run in a worker pool.
    :param cache: a shared cache (``RedisCache``) in front of the store.
    :param hasher: verifier of secrets; ``Argon2Hasher()`` by default.
    :param policy: what may be issued; ``Policy()`` by default.
    :param prefix: token prefix, ``[a-z][a-z0-9]{1,9}``.
    :param realm: the ``realm`` of ``WWW-Authenticate`` challenges.
    :param clock: epoch seconds; inject one to test expiry instantly.
    :param hash_workers: argon2 runs at most this many at once in the process
        (sync and async callers alike, on a dedicated pool).
    :param verifier_options: cache and throttle settings of
        :class:`~pat_middleware.core.verifier.Verifier` (``local_ttl``,
        ``subscribed_ttl``, ``shared_ttl``, ``negative_ttl``,
        ``failure_limit``, ``failure_window``, ``last_used_interval``...).
    :param meter_provider: where the OpenTelemetry instruments go (the global
        provider by default); see :mod:`pat_middleware.metrics`. Without
        ``opentelemetry-api`` installed, no metrics.
    :param security_log: keep the security log in the store (created, renamed,
        updated, rotated, revoked, administrator actions, first use from a new
        address, throttling per window), written off the request by a
        background thread (:class:`~pat_middleware.core.audit.SecurityLog`).
    :param log_retention: how long log entries are kept (90 days by default).
    :param on_new_address: called with the ``new_address`` event when a token
        is first used from an address its record does not list (off the
        request, on the background thread).
    """

    def __init__(
        self,
        store: Store,
        *,
        cache: SharedCache | None = None,
        hasher: Hasher | None = None,
        policy: Policy | None = None,
        prefix: str = DEFAULT_PREFIX,
        realm: str = defaults.REALM,
        clock: Callable[[], float] = time.time,
        scope_rules: ScopeRules | None = None,
        on_event: EventHook | None = None,
        hash_workers: int = 2,
        io_workers: int = 8,
        meter_provider: Any = None,
        security_log: bool = True,
        log_retention: timedelta = DEFAULT_RETENTION,
        on_new_address: EventHook | None = None,
        **verifier_options: Any,
    ) -> None:
        self.store = store
        self.cache = cache
        self.hasher = hasher or Argon2Hasher()
        self.policy = policy or Policy()
        self.realm = limits.realm(realm)
        hash_workers = limits.count("hash_workers", hash_workers, high=256)
        io_workers = limits.count("io_workers", io_workers, high=256)
        self.verifier = Verifier(
            hasher=self.hasher,
            prefix=prefix,
            clock=clock,
            shared=cache,
            scope_rules=scope_rules,
            on_event=on_event,
            unused_after=self.policy.revoke_unused_after,
            **verifier_options,
        )
        self._hash_pool = _LazyPool(hash_workers, "pat-hash")
        self._io_pool = _LazyPool(io_workers, "pat-io")
        self._background = _LazyPool(1, "pat-background")
        # argon2 runs only on the hash pool, whichever driver asks (at most
        # hash_workers at once); concurrent cold verifications of one token share
        # one run (single-flight: one table for threads, one for tasks).
        self._sync_flights, self._async_flights = Flights(), Flights()
        pooled = PooledHasher(self.hasher, self._hash_pool)
        self._sync = SyncDriver({Store: store, SharedCache: cache, Hasher: pooled}, self._background)
        # Last-used writes run on one long-lived background thread with the sync
        # store, whichever driver verified the token: never on the request.
        self.verifier.defer = self._sync.defer
        self._async = AsyncDriver(
            {
                Store: getattr(store, "async_store", None) or InThreads(store, self._io_pool),
                SharedCache: cache and (getattr(cache, "async_cache", None) or InThreads(cache, self._io_pool)),
                Hasher: InThreads(self.hasher, self._hash_pool),
            }
        )
        #: The security log's writer (``None`` when ``security_log=False``).
        self.security_log: SecurityLog | None = None
        if security_log and not callable(getattr(store, "append_log", None)):
            logger.warning(
                "%s has no append_log (a store written for 0.1): the security log is off", type(store).__name__
            )
        elif security_log:
            self.security_log = SecurityLog(
                lambda entries: self._sync.run(self.verifier.store_call(Store.append_log, entries)),
                lambda before: self._sync.run(self.verifier.store_call(Store.prune_log, before)),
                self._owner_of,
                retention=limits.days("log_retention", log_retention),
                clock=clock,
            )
        self.verifier.on_event = _chain(
            self.security_log.record if self.security_log else None, on_event, on_new_address
        )
        self.verifier.watch_addresses = self.security_log is not None or on_new_address is not None
        #: The store's change feed: the revocation bound that does not depend on Redis.
        self.feed: RevocationFeed | None = None
        if self.verifier.revocation_poll is not None:
            self.feed = RevocationFeed(
                lambda since: self._sync.run(self.verifier.changes_flow(since)),
                lambda ids: self._sync.run(self.verifier.forget_flow(ids)),
                self.verifier.set_trusted_until,
                interval=self.verifier.revocation_poll,
                lookback=self.verifier.revocation_lookback,
                clock=clock,
                degraded=self.verifier.degraded,
            )
            self.verifier.start_feed = self.feed.start
        #: Whether OpenTelemetry instruments were registered (``opentelemetry-api`` installed).
        self.metrics = instrument(self.verifier, self.feed, meter_provider)
        #: The management rules as flows, for code that runs them itself (``run``/``arun``).
        self.flows = flows = ManagerFlows(self.verifier, self.policy)
        #: Sync management API: ``auth.manager.create(...)``.
        if self.security_log is not None:
            flows.pending_log = self.security_log.pending
        self.manager = TokenManager(flows, self._sync)
        #: Async management API: ``await auth.async_manager.create(...)``.
        self.async_manager = AsyncTokenManager(flows, self._async)

    @classmethod
    def from_url(
        cls,
        store_url: str = defaults.STORE_URL,
        cache_url: str | None = None,
        *,
        cache_prefix: str = defaults.CACHE_PREFIX,
        **options: Any,
    ) -> PATAuth:
        """Build from URLs: ``sqlite:///tokens.db``, ``memory://``, ``postgresql://...``,
        ``redis://...`` for the store; for the optional cache ``redis://...``, a
        Sentinel service (``redis+sentinel://host:26379,host:26380/mymaster/0``) or
        a Cluster (``redis+cluster://host:6379,host:6380``); see
        :mod:`pat_middleware.redis.topology`."""
        cache: SharedCache | None = None
        if cache_url:
            from pat_middleware.cache.redis import RedisCache

            cache = RedisCache(cache_url, prefix=cache_prefix)
        return cls(store_from_url(store_url), cache=cache, **options)

    def run(self, flow: Flow[T]) -> T:
        """Run a core flow (e.g. from ``auth.flows``) with the sync driver."""
        return self._sync.run(flow)

    async def arun(self, flow: Flow[T]) -> T:
        """Run a core flow with the async driver."""
        return await self._async.run(flow)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **options: Any) -> PATAuth:
        """Build from ``PAT_*`` environment variables (default ``os.environ``:
        ``PAT_STORE_URL``, ``PAT_CACHE_URL``, ``PAT_HMAC_KEY``...; see
        :mod:`pat_middleware.config`); ``options`` win over the variables."""
        env = os.environ if env is None else env
        settings, redis_options = settings_from_env(env)
        if cache_url := env.get("PAT_CACHE_URL", "").strip():
            from pat_middleware.cache.redis import RedisCache

            settings["cache"] = RedisCache(cache_url, **redis_options)
        store = store_from_url(env.get("PAT_STORE_URL", "").strip() or DEFAULT_STORE_URL)
        return cls(store, **{**settings, **options})

    # -- health -----------------------------------------------------------------
    def health(self) -> Health:
        """Store and cache reachability with latency, the invalidation channel's
        subscription and the change feed's lag (:class:`~pat_middleware.core.health.Health`)."""
        return self.run(self._health_flow())

    async def ahealth(self) -> Health:
        """:meth:`health` for async code."""
        return await self.arun(self._health_flow())

    def _health_flow(self) -> Flow[Health]:
        lag = None
        if self.feed is not None and self.feed.state is not None:
            lag = max(0.0, self.feed.clock() - self.feed.state.last_ok)
        return health_flow(self.verifier.shared, lag)

    # -- verification -----------------------------------------------------------
    @property
    def prefix(self) -> str:
        """The token prefix."""
        return self.verifier.prefix

    def verify(self, token: str, *, client_ip: str | None = None) -> Principal:
        """The principal of a valid token; ``InvalidToken`` / ``StoreUnavailable`` otherwise."""
        principal = self.verifier.cached(token, client_ip)
        if principal is None:
            verify_flow, run = self.verifier.verify_flow, self._sync.run
            principal = self._sync_flights.run(_flight_key(token), lambda: run(verify_flow(token, client_ip)))
        return principal

    async def averify(self, token: str, *, client_ip: str | None = None) -> Principal:
        """:meth:`verify` for async code: the event loop never waits on argon2 or a sync store."""
        principal = self.verifier.cached(token, client_ip)
        if principal is None:
            verify_flow, run = self.verifier.verify_flow, self._async.run
            principal = await self._async_flights.arun(_flight_key(token), lambda: run(verify_flow(token, client_ip)))
        return principal

    def _owner_of(self, token_id: str) -> str | None:
        record = self._sync.run(self.verifier.store_call(Store.get, token_id))
        return None if record is None else record.user_id

    # -- lifecycle ----------------------------------------------------------------
    def close(self) -> None:
        """Stop background work and release the cache and the store."""
        if self.feed is not None:
            self.feed.stop()
        self._background.shutdown()
        if self.security_log is not None:
            self.security_log.close()
        self._hash_pool.shutdown()
        self._io_pool.shutdown()
        if self.cache is not None:
            self.cache.close()
        self.store.close()

    async def aclose(self) -> None:
        """:meth:`close` from async code: closes the async clients on this loop, then
        waits for background work in a thread, not on the loop."""
        for protocol in (SharedCache, Store):
            target: Any = self._async.targets[protocol]
            if target is not None and not isinstance(target, InThreads):
                await target.close()
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def __repr__(self) -> str:
        return f"PATAuth(store={type(self.store).__name__}, cache={type(self.cache).__name__}, prefix={self.prefix!r})"


def _chain(log: EventHook | None, on_event: EventHook | None, on_new_address: EventHook | None) -> EventHook | None:
    """One event hook: the security log's, then the app's, then (for ``new_address``)
    ``on_new_address``; ``None`` when there is none (``emit`` then only logs)."""
    if on_new_address is None and log is None:
        return on_event
    hooks = [h for h in (log, on_event) if h is not None]

    if on_new_address is not None:
        hooks.append(lambda event: on_new_address(event) if event.kind == "new_address" else None)

    def hook(event: Event) -> None:
        for each in hooks:
            emit(each, event, log=False)

    return hook


def _flight_key(token: str) -> bytes:
    """Single-flight key: the token's digest (the plaintext is never kept)."""
    text = token if type(token) is str else repr(token)
    return sha256(text.encode("utf-8", "surrogatepass")).digest()
