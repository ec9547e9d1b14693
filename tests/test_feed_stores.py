"""The revocation feed against real stores: the two ways a poll could miss a change.

* PostgreSQL stamps ``changed_at`` with ``now()``, the transaction's start, so
  a transaction that began first may commit last: its change becomes visible
  with a stamp older than a poll that already ran.
* SQLite stamps with the writing host's clock: a revoking process whose
  clock is 3 s behind writes stamps 3 s in the past. (Redis and PostgreSQL
  stamp with the server's clock, so the writer's clock does not matter there.)

Both are run for real (a transaction held open on a row lock; a child process
under ``faketime``) through :class:`~pat_middleware.core.feed.RevocationFeed`, so
the poll horizon of :class:`~pat_middleware.core.feed.FeedState` (previous poll's
start minus ``lookback``) is what is tested.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from store_contract import make_record

from pat_middleware.core.feed import RevocationFeed
from pat_middleware.stores import SQLiteStore, Store
from pat_middleware.stores.redis import RedisStore
from pat_middleware.stores.sqlalchemy import SQLAlchemyStore

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

#: How far behind the revoking process's clock is.
SKEW = 3.0


def _feed(store: Store) -> tuple[RevocationFeed, list[list[str]]]:
    """A feed on ``store`` with the real clock and the default lookback, polled by hand."""
    handed: list[list[str]] = []
    feed = RevocationFeed(store.changes_since, handed.append, lambda deadline: None, interval=1.0, clock=time.time)
    return feed, handed


def _last_poll_start(feed: RevocationFeed) -> datetime:
    assert feed.state is not None
    return datetime.fromtimestamp(feed.state.last_ok, UTC)


def _stamps(store: Store) -> dict[str, datetime]:
    return dict(store.changes_since(datetime.now(UTC) - timedelta(minutes=5)))


# -- PostgreSQL: commits out of stamp order ---------------------------------------------


@pytest.fixture
def pg_store(sqlalchemy_postgres_url: str) -> Iterator[SQLAlchemyStore]:
    store = SQLAlchemyStore(sqlalchemy_postgres_url, table_name=f"pat_feed_{uuid.uuid4().hex[:8]}")
    store.create_schema()
    yield store
    store.drop_schema()
    store.close()


def _wait_for_lock_waiter(postgres_url: str) -> None:
    deadline = time.monotonic() + 30
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            ).fetchone()
            if row is not None and row[0] >= 1:
                return
            assert time.monotonic() < deadline, "the revocation never queued on the row lock"
            time.sleep(0.02)


@pytest.mark.postgres
def test_postgres_commit_after_a_later_stamped_one_is_not_missed(pg_store: SQLAlchemyStore, postgres_url: str) -> None:
    a, b = make_record(), make_record()
    pg_store.insert(a)
    pg_store.insert(b)
    feed, handed = _feed(pg_store)
    assert feed.poll_once() == []
    table = pg_store.table.name
    holder = psycopg.connect(postgres_url)  # holds A's row: the revocation of A waits, its transaction open
    try:
        assert holder.execute(f'SELECT id FROM "{table}" WHERE id = %s FOR UPDATE', (a.id,)).fetchone()
        with ThreadPoolExecutor(1) as pool:
            revoking_a = pool.submit(pg_store.revoke, a.id, datetime.now(UTC))  # stamped T1 = its now()
            _wait_for_lock_waiter(postgres_url)
            time.sleep(0.05)
            assert pg_store.revoke(b.id, datetime.now(UTC)) == [b.id]  # stamped T2 > T1, committed first
            assert feed.poll_once() == [b.id]
            first_poll = _last_poll_start(feed)
            holder.commit()  # A's transaction goes on and commits, after the poll
            assert revoking_a.result(timeout=30) == [a.id]
    finally:
        holder.close()
    stamps = _stamps(pg_store)
    assert stamps[a.id] < stamps[b.id] < first_poll  # a cursor at the last poll's start skips A
    assert feed.poll_once() == [a.id]
    assert feed.poll_once() == []  # each change is acted on once
    assert handed == [[b.id], [a.id]]


# -- a revoking process whose clock is 3 s behind -----------------------------------------

_CHILD = """
import sys, time
from datetime import UTC, datetime
kind, target, extra, token_id = sys.argv[1:5]
if kind == "sqlite":
    from pat_middleware.stores import SQLiteStore
    store = SQLiteStore(target)
elif kind == "postgresql":
    from pat_middleware.stores.sqlalchemy import SQLAlchemyStore
    store = SQLAlchemyStore(target, table_name=extra)
else:
    from pat_middleware.stores.redis import RedisStore
    store = RedisStore.from_url(target, prefix=extra)
store.get(token_id)  # connected, schema checked: the revocation below is all that is left
print("ready", flush=True)
sys.stdin.readline()
print(time.time(), flush=True)
print(store.revoke(token_id, datetime.now(UTC)), flush=True)
store.close()
"""


def _faketime() -> str:
    path = shutil.which("faketime")
    if path is None:
        from conftest import skip_or_fail

        skip_or_fail("faketime is not installed (apt-get install faketime)")
        raise AssertionError("unreachable")
    return path


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def skew_case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Store, list[str]]]:
    """(kind, the store, the child's arguments: kind, target, extra) for each store kind."""
    kind = request.param
    store: Store
    if kind == "sqlite":
        path = str(tmp_path / "tokens.db")
        store, args = SQLiteStore(path), [kind, path, "-"]
    elif kind == "postgresql":
        url = request.getfixturevalue("sqlalchemy_postgres_url")
        table = f"pat_feed_{uuid.uuid4().hex[:8]}"
        sql = SQLAlchemyStore(url, table_name=table)
        sql.create_schema()
        store, args = sql, [kind, url, table]
    else:
        url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
        store, args = RedisStore.from_url(url, prefix=prefix), [kind, url, prefix]
    yield kind, store, args
    if isinstance(store, SQLAlchemyStore):
        store.drop_schema()
    store.close()


def _revoke_in_a_process_behind(args: list[str], token_id: str, before_revoking: Callable[[], None]) -> float:
    """Revoke ``token_id`` in a child whose clock is ``SKEW`` behind; ``before_revoking``
    runs once the child is connected. Returns the child's own time at the revocation."""
    command = [_faketime(), "-f", f"-{SKEW:g}s", sys.executable, "-c", _CHILD, *args, token_id]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as child:
        assert child.stdin is not None and child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        before_revoking()
        sent = time.time()
        child.stdin.write("go\n")
        child.stdin.flush()
        child_time = float(child.stdout.readline())
        assert child.stdout.readline().strip() == repr([token_id])
        assert child.wait(30) == 0
    assert sent - SKEW - 0.5 < child_time < sent - SKEW + 0.5  # the child's clock is behind
    return child_time


@pytest.mark.slow
def test_a_revoking_process_3s_behind_is_not_missed(skew_case: tuple[str, Store, list[str]]) -> None:
    kind, store, args = skew_case
    token, other = make_record(), make_record()
    store.insert(token)
    store.insert(other)
    feed, handed = _feed(store)
    assert feed.poll_once() == []
    _revoke_in_a_process_behind(args, token.id, lambda: feed.poll_once())
    first_poll = _last_poll_start(feed)
    stamp = _stamps(store)[token.id]
    now = datetime.now(UTC)
    if kind == "sqlite":  # the writer's clock: the stamp is older than the poll that ran before it
        assert now - timedelta(seconds=SKEW + 1) < stamp < first_poll
    else:  # the server's clock: the writer's does not matter
        assert first_poll <= stamp <= now
    assert feed.poll_once() == [token.id]
    assert feed.poll_once() == []
    assert handed == [[token.id]]
