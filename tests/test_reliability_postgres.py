"""PostgreSQL connections lost under load (issue 11, part 3).

The store's rule (``pat_middleware.stores.sqlalchemy``, "Lost connections"): a
connection lost in use is retried once on a fresh one for reads, and for
writes whose COMMIT was not sent yet; a lost COMMIT, a failed checkout or a
second loss is ``StoreUnavailable``, which the middleware answers with 503 and
``Retry-After``. So:

* **backends terminated** (``pg_terminate_backend`` on every connection to the
  database, twelve times, each followed by 0.2 s of terminating the backends
  caught running a statement: idle ones the pool's pre-ping would replace
  anyway) while two uvicorn workers on the Starlette example
  serve cached tokens, tokens minted during the load (uncached), the
  management API (a store read per request) and a token revoked during the
  load: no answer but 200/401, no 503 at all (the server stayed up), the
  revoked token refused by every worker after the feed's bound, each worker
  answering a store read with 200 within a second of each termination;
* each retry rule, sync and async, pinned down by terminating the store's
  backends just before a chosen statement or the COMMIT; then the load
  in-process, sync and async at once, through ``PATAuth.verify``/``averify``,
  the managers and the feed: no call fails but a mint whose COMMIT was lost;
* **the server restarted** (a throwaway cluster made with ``initdb``, stopped
  with ``pg_ctl stop -m immediate`` under load, then started again): 503 with
  ``Retry-After`` for everything that needs the store while it is down
  (cached entries too, once the feed's bound has passed), never a 200 for
  the token revoked just before the stop, and every worker back to 200
  within a second of the restart, without restarting the app.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from store_contract import T0, make_record
from test_deployment import uvicorn_command
from test_example_starlette import Process, free_port, wait_until_up

from pat_middleware import PATAuth
from pat_middleware.core.hashing import HMACHasher
from pat_middleware.errors import InvalidToken, StoreUnavailable
from pat_middleware.stores.sqlalchemy import SQLAlchemyStore

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.filterwarnings("ignore::ResourceWarning")]

TERMINATE = (
    "SELECT count(pg_terminate_backend(pid, 2000)) FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
)
TERMINATE_ACTIVE = TERMINATE + " AND state = 'active'"
#: The workers' PAT_REVOCATION_POLL (seconds).
POLL = 1.0
#: A revoked token is refused within the poll, the feed's query allowance (1 s) and this margin.
BOUND = POLL + 1.0 + 0.5
#: Each worker answers a store read with 200 within this long after a termination or restart.
RECOVERY = 1.0
#: Requests each worker must answer with the revoked token after the bound.
MIN_AFTER = 5
LOAD_THREADS = 6
#: Terminations of every backend in the first test, this many seconds apart.
TERMINATIONS = 12
GAP = 0.4


def plain(url: str) -> str:
    """A SQLAlchemy ``postgresql+psycopg://`` URL as libpq takes it."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def terminate_all(url: str, hunt: float = 0.0) -> tuple[int, int]:
    """Terminate every other backend on ``url``'s database and wait for each to exit;
    then, for ``hunt`` seconds, terminate the backends caught running a statement
    (``state = 'active'``: a query in flight, which the pool's pre-ping cannot
    catch). How many of each."""
    with psycopg.connect(plain(url), autocommit=True) as conn:
        row = conn.execute(TERMINATE).fetchone()
        assert row is not None
        active = 0
        deadline = time.monotonic() + hunt
        while time.monotonic() < deadline:
            found = conn.execute(TERMINATE_ACTIVE).fetchone()
            assert found is not None
            active += int(found[0])
    return int(row[0]), active


# -- two uvicorn workers and the load -------------------------------------------------------------


@contextmanager
def two_workers(store_url: str) -> Iterator[str]:
    """``uvicorn --workers 2`` on the Starlette example (through ``deploy_app``, which
    adds ``X-Worker-PID``), no Redis, ``PAT_REVOCATION_POLL`` = :data:`POLL`. Checks
    on the way out that both shut down cleanly and nothing printed a traceback."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAT_")}
    env.update(PAT_TEST_APP="examples.starlette_app:app", PAT_STORE_URL=store_url, PAT_REVOCATION_POLL=str(POLL))
    process = Process(uvicorn_command(port), env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base_url, process)
        yield base_url
    finally:
        code = process.stop(signal.SIGTERM)
    output = process.text()
    assert code in (0, -signal.SIGTERM), output
    assert "Traceback" not in output, output
    assert output.count("Application shutdown complete.") == 2, output
    feed = output.count("revocation feed: the store could not be polled")
    print(f"\nserver log: the revocation feed lost the store {feed} times (one line per outage and worker)")


@dataclass(frozen=True)
class Sample:
    kind: str
    start: float  # time.monotonic() before the request was sent
    status: int
    pid: str
    retry_after: str | None


#: A probe: what to send for one kind of request, ``(path, token)``, or None to skip it for now.
Probe = Callable[[], tuple[str, str] | None]


class Load:
    """Threads cycling through the probes' kinds, a new connection per request (so
    both workers serve), recording every answer."""

    def __init__(
        self, base_url: str, probes: dict[str, Probe], mix: list[str] | None = None, threads: int = LOAD_THREADS
    ) -> None:
        self.probes = probes
        #: The kinds each thread cycles through (default: each probe once).
        self.mix = mix or list(probes)
        self.samples: list[Sample] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(base_url, i), daemon=True) for i in range(threads)]

    def _run(self, base_url: str, offset: int) -> None:
        kinds = self.mix
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=base_url, timeout=10.0, limits=limits) as http:
            i = offset
            while not self._stop.is_set():
                kind = kinds[i % len(kinds)]
                i += 1
                probe = self.probes[kind]()
                if probe is None:
                    continue
                path, token = probe
                start = time.monotonic()
                try:
                    response = http.get(path, headers={"Authorization": f"Bearer {token}"})
                except httpx.HTTPError as exc:
                    self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                    continue
                pid = response.headers.get("x-worker-pid", "")
                retry_after = response.headers.get("retry-after")
                self.samples.append(Sample(kind, start, response.status_code, pid, retry_after))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def pids(self) -> set[str]:
        return {s.pid for s in list(self.samples)}

    def wait_until(self, done: Callable[[list[Sample]], bool], what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not done(list(self.samples)):
            assert not self.errors, self.errors[:3]
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.01)

    def wait_for_workers(self, kinds: list[str], after: float = 0.0, timeout: float = 20.0) -> None:
        """Until two workers have answered 200 to each of ``kinds`` in requests started after ``after``."""

        def done(samples: list[Sample]) -> bool:
            return all(
                len({s.pid for s in samples if s.kind == kind and s.status == 200 and s.start > after}) >= 2
                for kind in kinds
            )

        self.wait_until(done, f"two workers answering 200 to {kinds}", timeout)


def first_ok_after(samples: list[Sample], kind: str, pid: str, moment: float) -> float | None:
    """Seconds from ``moment`` to the start of the worker's first 200 to ``kind`` started after it."""
    starts = [s.start for s in samples if s.kind == kind and s.pid == pid and s.status == 200 and s.start > moment]
    return min(starts) - moment if starts else None


def check_statuses(samples: list[Sample]) -> Counter[tuple[str, int]]:
    """No answer but 200, 401 and 503; every 503 with Retry-After. Counts by kind and status."""
    statuses = Counter((s.kind, s.status) for s in samples)
    assert {status for _, status in statuses} <= {200, 401, 503}, statuses
    no_retry_after = [s for s in samples if s.status == 503 and not s.retry_after]
    assert not no_retry_after, no_retry_after[:3]
    return statuses


def check_revoked(samples: list[Sample], pids: set[str], revoked: float) -> None:
    """The victim: never accepted by a request started later than BOUND after ``revoked``
    (revoke() returned), and each worker was asked at least MIN_AFTER times then."""
    late = [s for s in samples if s.kind == "revoked" and s.status == 200 and s.start > revoked + BOUND]
    assert not late, f"{len(late)} late acceptances of the revoked token: {late[:3]}"
    for pid in pids:
        after = [s for s in samples if s.kind == "revoked" and s.pid == pid and s.start > revoked + BOUND]
        assert len(after) >= MIN_AFTER, (pid, len(after))


def ms(values: list[float]) -> str:
    if not values:
        return "n=0"
    v = [x * 1e3 for x in values]
    return f"n={len(v)} median {statistics.median(v):.0f} ms, max {max(v):.0f} ms"


class Minter:
    """Mints a token every ``every`` seconds in this process during the load: the
    workers have not seen it, so its first use on each worker reads the store."""

    def __init__(self, admin: PATAuth, user: str, every: float = 0.25) -> None:
        self.admin = admin
        self.user = user
        self.every = every
        self.tokens: list[str] = []
        self.unavailable = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(self.every):
            i += 1
            try:
                self.tokens.append(self.admin.manager.create(self.user, f"fresh-{i}", ["repo:read"]).token)
            except StoreUnavailable:  # its COMMIT was lost (or the server is down): not retried
                self.unavailable += 1

    def latest(self) -> tuple[str, str] | None:
        return ("/repos", self.tokens[-1]) if self.tokens else None

    def __enter__(self) -> Minter:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(15)


def revoke(admin: PATAuth, token_id: str) -> float:
    """Revoke (again if its COMMIT was lost: revoke is idempotent); when it returned."""
    for _ in range(20):
        try:
            admin.manager.revoke(token_id)
            return time.monotonic()
        except StoreUnavailable:
            time.sleep(0.05)
    pytest.fail("could not revoke")


# -- 1. backends terminated under load, two uvicorn workers -------------------------------------------


@pytest.fixture
def pg_url(sqlalchemy_postgres_url: str) -> str:
    """The session database with the tokens table (``pat db init`` does the same)."""
    store = SQLAlchemyStore(sqlalchemy_postgres_url)
    store.create_schema()
    store.close()
    return sqlalchemy_postgres_url


def test_terminated_backends_cost_no_503_and_no_wrong_answer(pg_url: str) -> None:
    """Every backend terminated TERMINATIONS times under load: every answer 200 or 401 (no
    503 either: each lost read was retried), the token revoked during the load
    refused by both workers within the feed's bound, and each worker serving a
    store read (GET /api/tokens) with 200 within RECOVERY of each termination."""
    user = f"pg-{uuid.uuid4().hex[:8]}"
    admin = PATAuth.from_url(pg_url)
    manage = admin.manager.create(user, "manage", ["tokens:manage"]).token
    cached = admin.manager.create(user, "cached", ["repo:read"]).token
    victim = admin.manager.create(user, "victim", ["repo:read"])
    terminations: list[tuple[float, int, int]] = []
    try:
        with two_workers(pg_url) as base_url, Minter(admin, user) as minter:
            probes: dict[str, Probe] = {
                "cached": lambda: ("/repos", cached),
                "manage": lambda: ("/api/tokens", manage),  # lists the user's tokens: a store read each time
                "fresh": minter.latest,
                "revoked": lambda: ("/repos", victim.token),
            }
            mix = ["manage", "cached", "manage", "fresh", "manage", "revoked"]  # half of them store reads
            with Load(base_url, probes, mix) as load:
                load.wait_for_workers(["cached", "manage", "fresh", "revoked"])
                for i in range(TERMINATIONS):
                    time.sleep(GAP)
                    at = time.monotonic()
                    terminations.append((at, *terminate_all(pg_url, hunt=0.2)))
                    if i == 2:  # right after a termination: the admin's connection is gone too
                        revoked = revoke(admin, victim.record.id)
                time.sleep(max(0.0, revoked + BOUND - time.monotonic()))
                pids = load.pids()

                def answered_after_bound(samples: list[Sample]) -> bool:
                    after = [s.pid for s in samples if s.kind == "revoked" and s.start > revoked + BOUND]
                    return all(after.count(pid) >= MIN_AFTER for pid in pids)

                load.wait_until(answered_after_bound, "answers to the revoked token after the bound")
            samples = list(load.samples)
            assert not load.errors, load.errors[:3]
    finally:
        admin.close()

    assert len(pids) == 2, pids
    statuses = check_statuses(samples)
    unavailable = sum(n for (_, status), n in statuses.items() if status == 503)
    assert unavailable == 0, statuses
    refused = [s for s in samples if s.status == 401 and s.kind != "revoked"]
    assert not refused, refused[:3]
    check_revoked(samples, pids, revoked)
    recoveries = []
    for at, killed, _ in terminations:
        assert killed >= 2, terminations  # at least the workers' connections were there to kill
        for pid in pids:
            delay = first_ok_after(samples, "manage", pid, at)
            assert delay is not None and delay <= RECOVERY, (pid, delay)
            recoveries.append(delay)
    fresh = sum(n for (kind, _), n in statuses.items() if kind == "fresh")
    last_accept = max(s.start for s in samples if s.kind == "revoked" and s.status == 200) - revoked
    print(
        f"\n{len(terminations)} terminations: {sum(n for _, n, _ in terminations)} backends, "
        f"{sum(n for _, _, n in terminations)} of them caught running a statement; {len(samples)} requests "
        f"({fresh} with {len(minter.tokens)} tokens minted during the load, {minter.unavailable} mints "
        f"unavailable); statuses {dict(statuses)}\n"
        f"first store-read 200 per worker after a termination: {ms(recoveries)}\n"
        f"revoked token: last 200 {last_accept:+.2f} s from revoke() returning"
    )


# -- 2. in-process: each retry rule, then verify/averify and the managers under terminations ----------


class Assassin:
    """Terminates every backend of the database (from a side connection, waiting
    for them to exit) just before the engine sends a statement of the armed kind
    (``SELECT``, ``INSERT``, ``UPDATE``...) or its ``COMMIT``."""

    def __init__(self, url: str, engine: Engine) -> None:
        self.url = url
        self.engine = engine
        self.armed: str | None = None
        self.times = 0
        #: Every statement kind (and COMMIT) the engine sent, in order.
        self.seen: list[str] = []
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "commit", self._commit)

    def arm(self, kind: str, times: int = 1) -> None:
        self.armed, self.times, self.seen = kind, times, []

    def _statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self._strike(statement.split(None, 1)[0].upper())

    def _commit(self, conn: Any) -> None:
        self._strike("COMMIT")

    def _strike(self, kind: str) -> None:
        self.seen.append(kind)
        if self.times and kind == self.armed:
            self.times -= 1
            terminate_all(self.url)

    def remove(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._statement)
        event.remove(self.engine, "commit", self._commit)


@dataclass
class Face:
    """One of the store's two faces, sync or async, with its engine under an Assassin."""

    store: SQLAlchemyStore
    assassin: Assassin
    loop: asyncio.AbstractEventLoop | None

    def call(self, method: str, *args: Any) -> Any:
        if self.loop is None:
            return getattr(self.store, method)(*args)
        async_store = self.store.async_store
        assert async_store is not None
        return self.loop.run_until_complete(getattr(async_store, method)(*args))


@pytest.fixture(params=["sync", "async"])
def face(request: pytest.FixtureRequest, sqlalchemy_postgres_url: str) -> Iterator[Face]:
    store = SQLAlchemyStore(sqlalchemy_postgres_url, table_name=f"pat_tokens_{uuid.uuid4().hex[:8]}")
    store.create_schema()
    loop = asyncio.new_event_loop() if request.param == "async" else None
    if loop is None:
        assert store.engine is not None
        engine = store.engine
    else:
        assert store.async_store is not None
        engine = store.async_store.engine.sync_engine
    assassin = Assassin(sqlalchemy_postgres_url, engine)
    try:
        yield Face(store, assassin, loop)
    finally:
        assassin.remove()
        if loop is not None:
            assert store.async_store is not None
            loop.run_until_complete(store.async_store.close())
            loop.close()
        store.drop_schema()
        store.close()


@pytest.mark.parametrize("method", ["get", "list_user", "changes_since"])
def test_a_read_that_loses_its_connection_runs_again_on_a_fresh_one(face: Face, method: str) -> None:
    record = make_record(user_id=f"u-{uuid.uuid4().hex[:6]}")
    face.store.insert(record)
    face.store.update(record.id, {"scopes": ["repo:read"]})  # a validity change: in changes_since
    arg = {"get": record.id, "list_user": record.user_id, "changes_since": T0 - timedelta(days=36500)}[method]
    face.assassin.arm("SELECT")
    result = face.call(method, arg)
    assert face.assassin.seen == ["SELECT", "SELECT"]  # lost, then run again
    if method == "get":
        assert result == face.store.get(record.id)
    else:
        assert record.id in [r.id if hasattr(r, "id") else r[0] for r in result]


def test_a_read_that_loses_two_connections_is_unavailable_then_recovers(face: Face) -> None:
    record = make_record()
    face.store.insert(record)
    face.assassin.arm("SELECT", times=2)
    with pytest.raises(StoreUnavailable) as raised:
        face.call("get", record.id)
    assert face.assassin.seen == ["SELECT", "SELECT"]  # one retry, no more
    assert raised.value.retry_after > 0
    assert face.call("get", record.id) is not None  # the next call connects anew


def test_a_write_that_loses_its_connection_before_the_commit_runs_again(face: Face) -> None:
    """rotate's INSERT finds its connection gone: the server rolled the UPDATE back,
    so the whole transaction runs again, and exactly once it took effect."""
    old = make_record()
    face.store.insert(old)
    new = make_record(family_id=old.family_id, rotated_from=old.id)
    face.assassin.arm("INSERT")
    assert face.call("rotate", old.id, new, T0) is True
    assert face.assassin.seen == ["UPDATE", "INSERT", "UPDATE", "INSERT", "COMMIT"]
    family = face.store.list_family(old.family_id)
    assert [(r.id, r.revoked_at) for r in family] == [(old.id, T0), (new.id, None)]


def test_a_write_that_loses_its_connection_at_the_commit_is_not_run_again(face: Face) -> None:
    """The COMMIT's outcome is unknown to the client: StoreUnavailable, no second
    INSERT. (Here the server died before the COMMIT reached it: nothing was written.)"""
    record = make_record()
    face.assassin.arm("COMMIT")
    with pytest.raises(StoreUnavailable):
        face.call("insert", record)
    assert face.assassin.seen == ["INSERT", "COMMIT"]
    assert face.store.get(record.id) is None
    face.call("insert", record)  # and the store works again
    assert face.store.get(record.id) is not None


def test_verify_and_managers_sync_and_async_under_terminations(pg_url: str) -> None:
    """One PATAuth on the session database, sync and async callers at once: threads
    calling verify() (cached tokens and tokens minted during the load) and
    manager.list(); tasks calling averify() and async_manager.list(); the feed
    polling every 0.2 s. Every backend terminated ten times, each followed by
    0.2 s of terminating backends caught running a statement: no read, no
    verification and no feed poll fails; a token revoked mid-load is refused
    at once in this process and never accepted again."""
    user = f"inproc-{uuid.uuid4().hex[:8]}"
    auth = PATAuth(SQLAlchemyStore(pg_url), hasher=HMACHasher(b"reliability"), revocation_poll=0.2)
    assert auth.feed is not None
    cached = auth.manager.create(user, "cached", ["repo:read"]).token
    victim = auth.manager.create(user, "victim", ["repo:read"])
    auth.verify(cached)  # cached here; starts the feed
    auth.verify(victim.token)
    outcomes: Counter[str] = Counter()
    revoked_at: list[float] = []
    minted: list[str] = []
    stop = threading.Event()

    def outcome(kind: str, call: Callable[[], object], token: str | None = None) -> None:
        try:
            call()
            outcomes[f"{kind} ok"] += 1
            if token == victim.token and revoked_at:
                outcomes["victim accepted after revoke()"] += 1
        except InvalidToken as exc:
            outcomes[f"{kind} refused ({exc.reason})"] += 1
        except StoreUnavailable:
            outcomes[f"{kind} unavailable"] += 1

    def sync_caller(i: int) -> None:
        while not stop.is_set():
            token = (cached, victim.token, minted[-1] if minted else cached)[i % 3]
            i += 1
            outcome("verify", lambda: auth.verify(token), token)
            outcome("list", lambda: auth.manager.list(user))

    async def async_caller(i: int) -> None:
        while not stop.is_set():
            token = (cached, victim.token, minted[-1] if minted else cached)[i % 3]
            i += 1
            try:
                await auth.averify(token)
                outcomes["averify ok"] += 1
                if token == victim.token and revoked_at:
                    outcomes["victim accepted after revoke()"] += 1
            except InvalidToken as exc:
                outcomes[f"averify refused ({exc.reason})"] += 1
            except StoreUnavailable:
                outcomes["averify unavailable"] += 1
            try:
                await auth.async_manager.list(user)
                outcomes["alist ok"] += 1
            except StoreUnavailable:
                outcomes["alist unavailable"] += 1

    def async_callers() -> None:
        async def main() -> None:
            await asyncio.gather(*(async_caller(i) for i in range(3)))

        asyncio.run(main())

    def minter() -> None:
        i = 0
        while not stop.wait(0.1):
            i += 1
            try:
                minted.append(auth.manager.create(user, f"fresh-{i}", ["repo:read"]).token)
                outcomes["create ok"] += 1
            except StoreUnavailable:
                outcomes["create unavailable"] += 1  # its COMMIT was lost: not run again

    threads = [threading.Thread(target=sync_caller, args=(i,)) for i in range(3)]
    threads += [threading.Thread(target=async_callers), threading.Thread(target=minter)]
    active = 0
    try:
        for thread in threads:
            thread.start()
        for i in range(10):
            time.sleep(0.4)
            active += terminate_all(pg_url, hunt=0.2)[1]
            if i == 4:
                auth.manager.revoke(victim.record.id)
                revoked_at.append(time.monotonic())
                with pytest.raises(InvalidToken):
                    auth.verify(victim.token)
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
        auth.close()
    print(f"\n10 terminations ({active} backends caught running a statement), feed failures {auth.feed.failures}")
    print(dict(outcomes))
    assert outcomes["verify ok"] > 100 and outcomes["averify ok"] > 100 and outcomes["create ok"] > 10
    assert not [k for k in outcomes if k.endswith("unavailable") and k != "create unavailable"], outcomes
    assert auth.feed.failures == 0
    assert outcomes["victim accepted after revoke()"] == 0
    refusals = {k for k in outcomes if "refused" in k}
    assert refusals <= {"verify refused (revoked)", "averify refused (revoked)"}, outcomes


# -- 3. the server restarted under load (a throwaway cluster) ------------------------------------------


@dataclass
class Cluster:
    """A PostgreSQL cluster of its own, in a temporary directory, on a free loopback port."""

    bindir: Path
    root: Path
    port: int
    as_owner: list[str]  # the command prefix that runs a program as the cluster's owner

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres?connect_timeout=2"

    def run(self, program: str, *args: str) -> None:
        argv = [*self.as_owner, str(self.bindir / program), *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.run("pg_ctl", "-D", str(self.root / "data"), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self, mode: str = "immediate") -> None:
        self.run("pg_ctl", "-D", str(self.root / "data"), "-m", mode, "-w", "stop")


def _postgres_bindir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    which = shutil.which("pg_ctl")
    return Path(which).parent if which else None


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A throwaway cluster (``initdb`` in a temporary directory, trust auth),
    started for the test and removed after it. Skipped when the server's
    programs are missing or, as root, there is no ``postgres`` user to run them
    (initdb refuses root). Never the shared server the other tests use."""
    bindir = _postgres_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        pytest.skip("initdb/pg_ctl not found (a throwaway PostgreSQL cluster is needed)")
    as_owner: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="pat-pg-"))
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            pytest.skip("running as root without a postgres user: initdb refuses root")
        runuser = shutil.which("runuser")
        if runuser is None:
            shutil.rmtree(root)
            pytest.skip("running as root without runuser")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_owner = [runuser, "-u", "postgres", "--"]
    made = Cluster(bindir, root, free_port(), as_owner)
    try:
        made.run("initdb", "-D", str(root / "data"), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        made.start()
        yield made
    finally:
        subprocess.run([*as_owner, str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


def test_server_restarted_under_load(cluster: Cluster) -> None:
    """``pg_ctl stop -m immediate`` under load on two uvicorn workers, ~4 s down, then
    started again. While it is down: every store read (GET /api/tokens) and a
    token the workers never saw get 503 with Retry-After, never 200 or 401;
    cached tokens keep working until the feed's bound has passed since the stop,
    then get 503 too; the token revoked just before the stop is never accepted
    after the bound. Once it is up: every worker answers 200 within RECOVERY
    (no app restart), and refuses the revoked token."""
    store = SQLAlchemyStore(cluster.url)
    store.create_schema()
    store.close()
    user = f"restart-{uuid.uuid4().hex[:8]}"
    admin = PATAuth.from_url(cluster.url)
    manage = admin.manager.create(user, "manage", ["tokens:manage"]).token
    cached = admin.manager.create(user, "cached", ["repo:read"]).token
    cold = admin.manager.create(user, "cold", ["repo:read"]).token  # first used while the server is down
    victim = admin.manager.create(user, "victim", ["repo:read"])
    state = {"down": False}
    try:
        with two_workers(cluster.url) as base_url:
            probes: dict[str, Probe] = {
                "cached": lambda: ("/repos", cached),
                "manage": lambda: ("/api/tokens", manage),
                "cold": lambda: ("/repos", cold) if state["down"] else None,
                "revoked": lambda: ("/repos", victim.token),
            }
            with Load(base_url, probes) as load:
                load.wait_for_workers(["cached", "manage", "revoked"])
                time.sleep(0.3)
                revoked = revoke(admin, victim.record.id)
                cluster.stop("immediate")
                down = time.monotonic()
                state["down"] = True
                time.sleep(BOUND + 1.5)
                starting = time.monotonic()  # from here on the server may answer
                cluster.start()
                up = time.monotonic()
                load.wait_for_workers(["manage", "cached", "cold"], after=up, timeout=10.0)
                pids = load.pids()

                def refused_after_up(samples: list[Sample]) -> bool:
                    after = [s.pid for s in samples if s.kind == "revoked" and s.start > up and s.status == 401]
                    return all(after.count(pid) >= MIN_AFTER for pid in pids)

                load.wait_until(refused_after_up, "the revoked token refused after the restart", timeout=10.0)
                time.sleep(max(0.0, up + RECOVERY + 0.5 - time.monotonic()))  # then all is well again
            samples = list(load.samples)
            assert not load.errors, load.errors[:3]
    finally:
        admin.close()

    assert len(pids) == 2, pids
    statuses = check_statuses(samples)
    check_revoked(samples, pids, revoked)
    while_down = [s for s in samples if down < s.start and s.start < starting]
    for kind in ("manage", "cold"):
        answers = Counter(s.status for s in while_down if s.kind == kind)
        assert set(answers) == {503}, (kind, answers)
    stale = [s for s in while_down if s.kind == "cached" and s.start > down + BOUND]
    assert stale and {s.status for s in stale} == {503}, Counter(s.status for s in stale)
    assert {s.pid for s in stale} == pids
    last_cached = max(s.start for s in while_down if s.kind == "cached" and s.status == 200) - down
    recoveries = {
        kind: [first_ok_after(samples, kind, pid, up) for pid in pids] for kind in ("manage", "cached", "cold")
    }
    for kind, delays in recoveries.items():
        assert all(d is not None and d <= RECOVERY for d in delays), (kind, delays)
    after_up = [s for s in samples if s.start > up + RECOVERY and s.kind != "revoked"]
    assert {s.status for s in after_up} == {200}, Counter(s.status for s in after_up)
    lines = [f"first 200 per worker after the restart, {k}: {ms([d for d in v if d is not None])}"
             for k, v in recoveries.items()]  # fmt: skip
    print(
        f"\ndown {starting - down:.1f} s (pg_ctl start took {up - starting:.2f} s); {len(samples)} requests, "
        f"{len(while_down)} while down: "
        f"{dict(Counter((s.kind, s.status) for s in while_down))}; all: {dict(statuses)}\n"
        f"Retry-After values: {sorted({s.retry_after or '' for s in samples if s.status == 503})}; "
        f"cached token's last 200 {last_cached:.2f} s after the stop\n" + "\n".join(lines)
    )


def test_on_an_autocommit_engine_writes_are_not_run_again(sqlalchemy_postgres_url: str) -> None:
    """An app's engine in AUTOCOMMIT commits each statement by itself: a write that
    lost its connection may be half done, so it is not run again (reads still are)."""
    engine = create_engine(sqlalchemy_postgres_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    store = SQLAlchemyStore(engine, table_name=f"pat_tokens_{uuid.uuid4().hex[:8]}")
    store.create_schema()
    assassin = Assassin(sqlalchemy_postgres_url, engine)
    try:
        record = make_record()
        assassin.arm("INSERT")
        with pytest.raises(StoreUnavailable):
            store.insert(record)
        assert assassin.seen == ["INSERT"]
        store.insert(record)
        assassin.arm("SELECT")
        assert store.get(record.id) is not None
        assert assassin.seen == ["SELECT", "SELECT"]
    finally:
        assassin.remove()
        store.drop_schema()
        engine.dispose()
