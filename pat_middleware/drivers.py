"""The two drivers that run the core's flows: one sync, one async.

A driver owns one I/O target per protocol of :data:`~pat_middleware.core.PROTOCOLS`
(the store, the shared cache, the hasher) and performs the
:class:`~pat_middleware.core.Call` effects a flow yields: ``Call(Store.get,
(key_id,))`` runs the target store's ``get``. The protocol method itself is the
key: the first time a driver meets one it binds it to its target's method of
that name (:func:`~pat_middleware.core.effect_of`) and keeps the bound method,
so performing an effect is one dict lookup and one call, with no string in
the flows and none looked up per call. Neither driver knows any rule. The
async driver never blocks the event loop: argon2 runs in a dedicated thread
pool (the limiter: at most ``hash_workers`` at once), and a sync-only store
runs in a separate I/O pool (:class:`InThreads`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from pat_middleware.flow import Flow, effect_of

__all__ = ["AsyncDriver", "InThreads", "SyncDriver"]

logger = logging.getLogger("pat_middleware")
T = TypeVar("T")


class SyncDriver:
    """Runs flows by calling the sync targets directly.

    ``targets`` maps each protocol (``Store``, ``SharedCache``, ``Hasher``) to
    the object that implements it (``None`` for an absent shared cache).
    """

    def __init__(self, targets: Mapping[type, object | None], background: Callable[[], ThreadPoolExecutor]) -> None:
        self.targets = dict(targets)
        self._background = background
        self._bound: dict[Callable[..., Any], Callable[..., Any]] = {}

    def _bind(self, method: Callable[..., Any]) -> Callable[..., Any]:
        protocol, name = effect_of(method)
        bound: Callable[..., Any] = getattr(self.targets[protocol], name)
        self._bound[method] = bound
        return bound

    def run(self, flow: Flow[T]) -> T:
        """Drive ``flow`` to completion and return its value."""
        bound = self._bound
        send: Any = None
        error: BaseException | None = None
        while True:
            try:
                call = flow.throw(error) if error is not None else flow.send(send)
            except StopIteration as stop:
                result: T = stop.value
                return result
            try:
                send, error = (bound.get(call.method) or self._bind(call.method))(*call.args, **call.kwargs), None
            except Exception as exc:
                send, error = None, exc

    def defer(self, flow: Flow[None]) -> None:
        """Run ``flow`` later, off the request (a long-lived background thread)."""
        self._background().submit(self._run_logged, flow)

    def _run_logged(self, flow: Flow[None]) -> None:
        try:
            self.run(flow)
        except Exception:
            logger.exception("background token work failed")


class AsyncDriver:
    """Runs flows by awaiting the async targets.

    ``targets`` maps each protocol to an object with the same method names as
    coroutines (``AsyncStore`` for ``Store``...), or to :class:`InThreads` around
    a sync one.
    """

    def __init__(self, targets: Mapping[type, object | None]) -> None:
        self.targets = dict(targets)
        self._bound: dict[Callable[..., Any], Callable[..., Awaitable[Any]]] = {}

    def _bind(self, method: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        protocol, name = effect_of(method)
        target = self.targets[protocol]
        bound: Callable[..., Awaitable[Any]]
        bound = target.method(name) if isinstance(target, InThreads) else getattr(target, name)
        self._bound[method] = bound
        return bound

    async def run(self, flow: Flow[T]) -> T:
        """Drive ``flow`` to completion and return its value."""
        bound = self._bound
        send: Any = None
        error: BaseException | None = None
        while True:
            try:
                call = flow.throw(error) if error is not None else flow.send(send)
            except StopIteration as stop:
                result: T = stop.value
                return result
            try:
                send, error = await (bound.get(call.method) or self._bind(call.method))(*call.args, **call.kwargs), None
            except Exception as exc:
                send, error = None, exc


class InThreads:
    """Async view of a sync object: each of its methods runs in ``executor``."""

    def __init__(self, target: object, executor: Callable[[], ThreadPoolExecutor]) -> None:
        self.target = target
        self._executor = executor

    def method(self, name: str) -> Callable[..., Awaitable[Any]]:
        """The target's method ``name`` as a coroutine function that runs it in the pool."""
        method = getattr(self.target, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor(), functools.partial(method, *args, **kwargs))

        return call
