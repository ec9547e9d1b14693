"""The runners: each runs an operation in a transaction (a read: in
autocommit), once more on a fresh connection when a lost one allows it, and
maps the errors. The sync one calls the operation; the async one passes the
same operation to ``AsyncConnection.run_sync``."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import StaticPool

from pat_middleware.stores.sqlalchemy.errors import Errors
from pat_middleware.stores.sqlalchemy.table import Schema

__all__ = ["AsyncRunner", "SyncRunner"]

T = TypeVar("T")
P = ParamSpec("P")

logger = logging.getLogger("pat_middleware")

_E = TypeVar("_E", Engine, AsyncEngine)


def _autocommit(engine: _E) -> _E:
    """``engine`` (same pool) running without BEGIN/COMMIT: a lone SELECT needs no
    transaction, and skipping it saves two round trips per lookup."""
    try:
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    except sa_exc.ArgumentError:  # a dialect without autocommit
        return engine


@dataclass(slots=True)
class Attempt:
    """How far one run of an operation got, for :meth:`Runner.retry_or_raise`."""

    read: bool
    #: A connection was checked out (failures before that are the pool's).
    connected: bool = False
    #: The operation returned: what fails now is the COMMIT, whose outcome is unknown.
    committing: bool = False


class Runner(Generic[_E]):
    """What both runners share: the engines, the error mapping and the retry rule.
    ``ready`` turns true once the schema is ensured.

    A connection the database dropped (a terminated backend, a restarted or
    failed-over server: SQLAlchemy invalidates the connection and, with it, the
    rest of the pool) is retried once on a fresh connection when that is known
    to be safe: a read (one SELECT, in autocommit), or a transaction that lost
    its connection before its COMMIT was sent, which the server has therefore
    rolled back. A connection lost *during* the COMMIT leaves the outcome
    unknown: that raises ``StoreUnavailable``, as does any failure of the
    second attempt or of the checkout itself (the pool's pre-ping has already
    tried a new connection there).
    """

    def __init__(self, engine: _E, errors: Errors, schema: Schema, auto_create: bool) -> None:
        self.engine: _E = engine
        self.reader: _E = _autocommit(engine)
        self.errors = errors
        self.schema = schema
        self.ready = not auto_create
        #: One connection shared by every caller (in-memory SQLite): transactions must not interleave.
        self.shared_connection = isinstance(engine.pool, StaticPool)
        #: Writes are retried only where they run in a transaction (not on an AUTOCOMMIT engine,
        #: set by execution options or by ``create_engine(isolation_level=)``).
        levels = (
            engine.get_execution_options().get("isolation_level"),
            getattr(engine.dialect, "_on_connect_isolation_level", None),
        )
        self.transactional = "AUTOCOMMIT" not in levels

    def attempts(self, read: bool) -> int:
        """How many attempts an operation gets: two where a lost connection can be
        retried safely, else one."""
        return 2 if read or self.transactional else 1

    def retry_or_raise(self, error: BaseException, attempt: Attempt, last: bool) -> None:
        """Return to run the operation once more after ``error``; else raise the library's error."""
        lost = isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated
        if last or not (lost and attempt.connected and (attempt.read or not attempt.committing)):
            self.errors.reraise(error)
        logger.info("token store: a database connection was lost; retrying on a fresh one")

    def ddl_failed(self, error: BaseException, retry: bool) -> bool:
        """True to try a DDL action once more (a lost race with another creator), else raise."""
        if retry and not self.errors.unreachable(error):
            return True
        self.errors.reraise(error)


class SyncRunner(Runner[Engine]):
    """Runs the operations on a sync ``Engine``."""

    def __init__(self, engine: Engine, errors: Errors, schema: Schema, auto_create: bool) -> None:
        super().__init__(engine, errors, schema, auto_create)
        self.lock: AbstractContextManager[Any] = threading.Lock() if self.shared_connection else nullcontext()

    def read(self, op: Callable[Concatenate[Connection, P], T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``op(conn, *args, **kwargs)`` on a connection in autocommit (one SELECT)."""
        return self._run(lambda conn: op(conn, *args, **kwargs), read=True)

    def write(self, op: Callable[Concatenate[Connection, P], T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``op(conn, *args, **kwargs)`` in one transaction, committed when it returns."""
        return self._run(lambda conn: op(conn, *args, **kwargs), read=False)

    def _run(self, op: Callable[[Connection], T], read: bool) -> T:
        if not self.ready:
            self.ddl(self.schema.create)
            self.ready = True
        attempts = self.attempts(read)
        for n in range(1, attempts + 1):
            attempt = Attempt(read)
            try:
                with self.lock, self.reader.connect() if read else self.engine.begin() as conn:
                    attempt.connected = True
                    result = op(conn)
                    attempt.committing = True
                return result
            except (sa_exc.SQLAlchemyError, OSError) as error:
                self.retry_or_raise(error, attempt, last=n == attempts)
        raise AssertionError("the last attempt returns or raises")

    def ddl(self, action: Callable[[Connection], None], retry: bool = True) -> None:
        try:
            with self.lock, self.engine.begin() as conn:
                action(conn)
        except (sa_exc.SQLAlchemyError, OSError) as error:
            if self.ddl_failed(error, retry):
                self.ddl(action, retry=False)


class AsyncRunner(Runner[AsyncEngine]):
    """Runs the same sync operations, through ``AsyncConnection.run_sync``."""

    def __init__(self, engine: AsyncEngine, errors: Errors, schema: Schema, auto_create: bool) -> None:
        super().__init__(engine, errors, schema, auto_create)
        # (an asyncio.Lock binds to the first loop that waits on it: one loop per in-memory store)
        self.lock: AbstractAsyncContextManager[Any] = asyncio.Lock() if self.shared_connection else nullcontext()

    async def read(self, op: Callable[Concatenate[Connection, P], T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``op(conn, *args, **kwargs)`` on a connection in autocommit (one SELECT)."""
        return await self._run(lambda conn: op(conn, *args, **kwargs), read=True)

    async def write(self, op: Callable[Concatenate[Connection, P], T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``op(conn, *args, **kwargs)`` in one transaction, committed when it returns."""
        return await self._run(lambda conn: op(conn, *args, **kwargs), read=False)

    async def _run(self, op: Callable[[Connection], T], read: bool) -> T:
        if not self.ready:
            await self.ddl(self.schema.create)
            self.ready = True
        attempts = self.attempts(read)
        for n in range(1, attempts + 1):
            attempt = Attempt(read)
            try:
                async with self.lock, self.reader.connect() if read else self.engine.begin() as conn:
                    attempt.connected = True
                    result = await conn.run_sync(op)
                    attempt.committing = True
                return result
            except (sa_exc.SQLAlchemyError, OSError) as error:
                self.retry_or_raise(error, attempt, last=n == attempts)
        raise AssertionError("the last attempt returns or raises")

    async def ddl(self, action: Callable[[Connection], None], retry: bool = True) -> None:
        try:
            conn: AsyncConnection
            async with self.lock, self.engine.begin() as conn:
                await conn.run_sync(action)
        except (sa_exc.SQLAlchemyError, OSError) as error:
            if self.ddl_failed(error, retry):
                await self.ddl(action, retry=False)
