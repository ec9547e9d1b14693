"""``SQLAlchemyStore``: token records in the app's own database (SQLAlchemy 2 Core).

PostgreSQL (psycopg 3) is the tested target; SQLite works too. No ORM model
is forced on the app: the table is plain Core.

**Migrations.** Put the table in your own Alembic history::

    # env.py, when the tokens table is the only thing you migrate
    from pat_middleware.stores.sqlalchemy import metadata
    target_metadata = metadata            # holds the default table "pat_tokens"

    # or next to your own tables, in your own MetaData
    from pat_middleware.stores.sqlalchemy import token_table
    token_table(Base.metadata)            # or token_table(my_metadata, "api_tokens")

and pass ``create_schema=False`` (the default except on SQLite). Without
migrations, ``pat db init`` (or ``store.create_schema()``) creates the table
and its indexes; both are idempotent and add to a table from release 0.1 the
feed's indexed ``changed_at`` column (Alembic users: add it in a revision).
Until then lookups work; writes and ``changes_since`` raise ``StoreUnavailable``
saying to run ``pat db init``. Each validity change sets ``changed_at`` in its
own statement from the database's clock (PostgreSQL ``now()``; SQLite ``'now'``,
to the millisecond; MySQL ``UTC_TIMESTAMP(6)``).

**Engines.** ``SQLAlchemyStore(url)`` creates and owns its engines
(``pool_pre_ping=True``, parameters hidden from error messages;
``engine_options=`` overrides); a bare ``postgresql://`` URL means psycopg 3.
Pass the app's ``Engine`` (and/or ``async_engine=``) to share its pool;
``close()`` never disposes engines the app passed in. Lookups (``get`` and
the listings) are a single SELECT run in autocommit (no BEGIN/COMMIT round
trips); writes run in one transaction each. The pre-ping costs one round
trip per pool checkout. An in-memory SQLite URL uses one shared connection,
so the store serialises its transactions.

**Async.** ``store.async_store`` implements ``AsyncStore`` when an async
engine is at hand: one passed in, one created from an async URL
(``postgresql+psycopg_async://``, ``sqlite+aiosqlite://``...), or, for a
``postgresql+psycopg://`` URL, one created with the same URL (psycopg 3
speaks both). Otherwise it is ``None`` and callers run the sync store in
threads. SQLAlchemy's asyncio layer needs ``greenlet``
(``sqlalchemy[asyncio]``); without it ``async_store`` is ``None``.
Given only an ``AsyncEngine``, the sync methods cannot borrow it (an async
driver cannot run outside the event loop), so the store opens a separate
sync engine to the same database when the driver has a sync twin (psycopg,
asyncpg -> psycopg, aiosqlite -> sqlite); otherwise the sync methods raise
``RuntimeError``.

**Atomicity.** Rotate and update are compare-and-set:
``UPDATE ... WHERE id = :id AND revoked_at IS NULL`` with a row-count check,
and rotate's UPDATE and INSERT share one transaction that is rolled back when
the UPDATE matched nothing. Under PostgreSQL's default READ COMMITTED two
workers rotating one token serialise on the row lock: exactly one wins.
(Under SERIALIZABLE the loser gets a serialisation failure, reported as
``StoreUnavailable``.) Revoke is one transaction too: a recursive SELECT
follows the token's ``rotated_from`` chain, then one UPDATE (``RETURNING``
where the dialect has it) revokes the token and its predecessors that are
still revocable, so a crash leaves all of them revoked or none.

**Live-name uniqueness** is a partial unique index on ``(user_id, name)``
``WHERE revoked_at IS NULL`` on PostgreSQL and SQLite. MySQL/MariaDB have no
partial indexes: there (and on any other dialect) the index is not created and the store checks the
name inside the writing transaction with ``SELECT ... FOR UPDATE`` instead,
which relies on InnoDB's next-key locking under REPEATABLE READ to keep two
concurrent inserts of one name apart (a deadlock there surfaces as
``StoreUnavailable``). That path is not exercised by this project's tests;
Alembic's autogenerate does not see the dialect condition, so drop the
``uq_<table>_live_name`` index from MySQL migrations by hand.

**Lost connections.** The pre-ping finds a connection that died while idle
in the pool and replaces it before use. A connection lost while in use (a
terminated backend, a restarted or failed-over server) makes SQLAlchemy
invalidate it and the rest of the pool, and the store runs the operation
once more on a fresh connection when that is known to be safe:

* reads (``get``, the listings, ``changes_since``): always; they change nothing;
* writes: when the connection was lost before the transaction's COMMIT was
  sent, since the server has then rolled the transaction back and nothing
  was written. A connection lost *during* the COMMIT leaves the outcome
  unknown (it may have committed): that raises ``StoreUnavailable`` rather
  than run the write again, because a re-run is not always the same write
  (``rotate``'s compare-and-set would find the token revoked by its own first
  run, ``insert`` would find its own id, a re-run ``revoke_user`` would not
  report the ids its first run revoked, so their cache entries would stay).
  The caller may retry: ``revoke`` is idempotent, ``update`` re-applies the
  same values. On an engine in
  ``AUTOCOMMIT`` writes are never retried.

So a terminated backend costs nothing while the server is up; the second
attempt's failure, a checkout that fails (the server is down: the pre-ping
has already tried a new connection) or a lost COMMIT raise
``StoreUnavailable`` (503 with ``Retry-After``). A server that comes back
needs no restart of the app: the next checkout connects anew.

**Errors.** Connection failures, pool timeouts and invalidated connections
(beyond the one retry above) raise ``StoreUnavailable`` (the driver's error
chained, never SQLAlchemy's, whose text carries statement parameters). A missing table raises
``StoreUnavailable`` telling you to run ``pat db init``. A live-name clash
raises ``NameTaken``; a duplicate id or a value the column rejects (too
long, NUL byte) raises ``ValueError``.

SQLite through SQLAlchemy stores naive timestamps; they are written and read
as UTC, so records always come back timezone-aware UTC. SQLite ignores
``FOR UPDATE``, so two processes touching one token at the same instant may
drop one IP from ``last_used_ips`` (revoke, rotate and update stay atomic).
The embedded :class:`~pat_middleware.stores.sqlite.SQLiteStore` is the
better SQLite choice; this path exists for apps already on SQLAlchemy.

**Inside.** ``table`` (the schema and the Alembic names), ``statements`` (built
once per store), ``operations`` (each one written once, as a plain function of
a sync ``Connection``), ``errors`` (the mapping to this library's errors),
``runner`` (transactions and the one retry; the async runner hands the same
operations to ``AsyncConnection.run_sync``), ``engines`` (URLs and the engines
the store creates) and ``store`` (the two faces).
"""

from __future__ import annotations

# SQLAlchemy itself first: when it is missing, this import fails naming it
# (``store_from_url`` turns that into "install the [sqlalchemy] extra"), even
# with the submodules below still cached from an earlier import.
import sqlalchemy as _sqlalchemy  # noqa: F401

from pat_middleware.stores.sqlalchemy.engines import parse_database_url as parse_database_url
from pat_middleware.stores.sqlalchemy.store import AsyncSQLAlchemyStore, SQLAlchemyStore
from pat_middleware.stores.sqlalchemy.table import metadata, pat_tokens, token_table

__all__ = [
    "AsyncSQLAlchemyStore",
    "SQLAlchemyStore",
    "metadata",
    "pat_tokens",
    "token_table",
]
