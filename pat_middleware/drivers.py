"""The two drivers that run the core's flows: one sync, one async.

A driver owns the I/O targets (store, shared cache, hasher) and performs the
:class:`~pat_middleware.core.Call` objects a flow yields. Neither knows any
rule. The async driver never blocks the event loop: argon2 runs in a
dedicated thread pool (the limiter: at most ``hash_workers`` at once), and a
sync-only store runs in a separate I/O pool.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .core import Call, Flow

__all__ = ["AsyncDriver", "InThreads", "SyncDriver"]

logger = logging.getLogger("pat_middleware")
T = TypeVar("T")


class SyncDriver:
    """Runs flows by calling the sync targets directly."""

    def __init__(self, targets: dict[str, Any], background: Callable[[], ThreadPoolExecutor]) -> None:
        self.targets = targets
        self._background = background

    def run(self, flow: Flow[T]) -> T:
        """Drive ``flow`` to completion and return its value."""
        send: Any = None
        error: BaseException | None = None
        while True:
            try:
                call = flow.throw(error) if error is not None else flow.send(send)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            try:
                send, error = getattr(self.targets[call.target], call.method)(*call.args), None
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
    """Runs flows by awaiting the async targets."""

    def __init__(self, targets: dict[str, Any]) -> None:
        self.targets = targets

    async def run(self, flow: Flow[T]) -> T:
        """Drive ``flow`` to completion and return its value."""
        send: Any = None
        error: BaseException | None = None
        while True:
            try:
                call: Call = flow.throw(error) if error is not None else flow.send(send)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            try:
                send, error = await getattr(self.targets[call.target], call.method)(*call.args), None
            except Exception as exc:
                send, error = None, exc


class InThreads:
    """Async view of a sync object: every method call runs in ``executor``."""

    def __init__(self, target: Any, executor: Callable[[], ThreadPoolExecutor]) -> None:
        self._target = target
        self._executor = executor

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self._target, name)

        async def call(*args: Any) -> Any:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor(), functools.partial(method, *args))

        return call
