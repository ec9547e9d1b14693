"""The scale-out deployment (docs/deployment.md, examples/deploy/), end to end.

Real servers in subprocesses, two workers each, on the session's PostgreSQL
database and the real Redis (own key prefix): ``uvicorn --workers 2`` on
``examples/starlette_app.py``, and the ``Procfile``'s ``release`` and ``web``
lines (``pat db init``; gunicorn with uvicorn workers and
``examples/deploy/gunicorn.conf.py`` on ``examples/deploy/app.py``). The
servers run the example apps through :mod:`deploy_app`, which only adds an
``X-Worker-PID`` header so the tests can tell the workers apart.

The test process mints tokens, hammers a protected route from several
threads (a new connection per request, so both workers serve) until both
workers have cached the token (and, with Redis, both are subscribed to the
invalidation channel: ``PUBSUB NUMSUB``), revokes the
token through its own manager and checks, per request, when acceptance
stopped: within :data:`REDIS_BOUND` with Redis, within ``revocation_poll`` plus
:data:`TTL_MARGIN` without. Then two OS processes rotate and revoke one
token at the same instant, many times, and the end state is checked.
"""

from __future__ import annotations

import importlib.util
import os
import random
import re
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis
from conftest import skip_or_fail
from race_procs import act, racers
from redis_procs import make_auth, percentile
from test_example_starlette import ROOT, Process, free_port, wait_until_up

from pat_middleware import PATAuth
from pat_middleware.errors import InvalidToken

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

DEPLOY = ROOT / "examples" / "deploy"
#: With Redis: no request that starts this long after ``revoke()`` returned may be accepted.
REDIS_BOUND = 0.250
#: Without Redis: the bound is ``revocation_poll`` (5 s by default) plus this.
REVOCATION_POLL = 5.0
TTL_MARGIN = 0.5
#: How long requests keep going after the bound (each worker must refuse them all).
SETTLE = 0.3
#: Requests each worker must have answered (all 401) after the bound for a trial to count.
MIN_ANSWERS_AFTER = 5
HAMMER_THREADS = 4
TRIALS = 4


# -- the Procfile and the servers ---------------------------------------------------------------


def procfile() -> dict[str, list[str]]:
    """``examples/deploy/Procfile`` as ``{process type: argv}``."""
    entries: dict[str, list[str]] = {}
    for line in (DEPLOY / "Procfile").read_text().splitlines():
        kind, sep, command = line.partition(":")
        if sep and not line.startswith("#"):
            entries[kind.strip()] = shlex.split(command)
    return entries


def console_script(name: str) -> str:
    """The path of a console script installed next to this interpreter."""
    path = Path(sys.executable).parent / name
    assert path.exists(), f"{name} is not installed next to {sys.executable}"
    return str(path)


@pytest.fixture
def pg_url(sqlalchemy_postgres_url: str) -> str:
    """The session database, its schema made by the Procfile's ``release`` line (``pat db init``)."""
    argv = procfile()["release"]
    assert argv == ["pat", "db", "init"]
    env = {**os.environ, "PAT_STORE_URL": sqlalchemy_postgres_url}
    done = _run([console_script("pat"), *argv[1:]], env)
    assert done.returncode == 0 and done.stdout.startswith("schema ready: SQLAlchemyStore("), done.stdout + done.stderr
    return sqlalchemy_postgres_url


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def dotenv(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of an env file (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"not KEY=value: {line!r}"
            values[key.strip()] = value.strip()
    return values


def uvicorn_command(port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "tests.deploy_app:app", "--workers", "2",
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip


def gunicorn_command() -> list[str]:
    """The Procfile's ``web`` line, serving the example through :mod:`deploy_app`."""
    for module in ("gunicorn", "uvicorn_worker"):
        if importlib.util.find_spec(module) is None:
            skip_or_fail(f"{module} is not installed (pip install gunicorn uvicorn-worker)")
    argv = procfile()["web"]
    assert argv[0] == "gunicorn"
    return [sys.executable, "-m", "gunicorn", *argv[1:], "tests.deploy_app:app"]


@contextmanager
def serving(argv: list[str], env: dict[str, str], port: int) -> Iterator[str]:
    """Run the server; yield its base URL; SIGTERM it and check it shut down cleanly."""
    process = Process(argv, env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base_url, process)
        yield base_url
    finally:
        code = process.stop(signal.SIGTERM)
    output = process.text()
    assert code in (0, -signal.SIGTERM), output
    assert "Traceback" not in output, output
    assert output.count("Application shutdown complete.") == 2, output  # each worker closed its PATAuth


@contextmanager
def launched(launcher: str, store_url: str, cache_url: str | None, cache_prefix: str, **settings: str) -> Iterator[str]:
    """Two workers on the example app: ``uvicorn --workers 2`` on ``examples/starlette_app.py``,
    or the Procfile's gunicorn on ``examples/deploy/app.py`` with ``.env.example``'s
    settings; services, address and ``settings`` replaced by the test's."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAT_")}
    if launcher == "uvicorn":
        argv, app = uvicorn_command(port), "examples.starlette_app:app"
    else:
        argv, app = gunicorn_command(), "examples.deploy.app:app"
        env.update(dotenv(DEPLOY / ".env.example"))
    env.update(PAT_TEST_APP=app, PAT_STORE_URL=store_url, PAT_CACHE_PREFIX=cache_prefix)
    env.update(HOST="127.0.0.1", PORT=str(port), WEB_CONCURRENCY="2", **settings)
    env.pop("PAT_CACHE_URL", None)
    if cache_url:
        env["PAT_CACHE_URL"] = cache_url
    with serving(argv, env, port) as base_url:
        yield base_url


# -- load and what it saw -------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    start: float  # time.monotonic() before the request was sent
    end: float  # ... and once the answer was in
    status: int
    pid: str


class Hammer:
    """Threads sending ``GET /repos`` with one token, a new connection per request."""

    def __init__(self, base_url: str, token: str, threads: int = HAMMER_THREADS) -> None:
        self.samples: list[Sample] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        headers = {"Authorization": f"Bearer {token}"}
        self._threads = [
            threading.Thread(target=self._run, args=(base_url, headers), daemon=True) for _ in range(threads)
        ]

    def _run(self, base_url: str, headers: dict[str, str]) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=base_url, headers=headers, timeout=10.0, limits=limits) as http:
            while not self._stop.is_set():
                start = time.monotonic()
                try:
                    response = http.get("/repos")
                except httpx.HTTPError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                pid = response.headers.get("x-worker-pid", "")
                self.samples.append(Sample(start, time.monotonic(), response.status_code, pid))

    def __enter__(self) -> Hammer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def accepted_by(self) -> set[str]:
        return {s.pid for s in list(self.samples) if s.status == 200}

    def wait_for_answers_after(self, moment: float, count: int, timeout: float = 10.0) -> None:
        """Until every worker that accepted the token has answered ``count`` requests
        started after ``moment`` (or ``timeout``: the trial's check then says which)."""
        deadline = time.monotonic() + timeout
        workers = self.accepted_by()
        while time.monotonic() < deadline:
            samples = list(self.samples)
            if all(sum(s.pid == pid and s.start > moment for s in samples) >= count for pid in workers):
                return
            time.sleep(0.01)

    def wait_for_workers(self, count: int, timeout: float = 20.0) -> None:
        """Until ``count`` different workers have accepted the token."""
        deadline = time.monotonic() + timeout
        while len(self.accepted_by()) < count:
            assert not self.errors, self.errors[:3]
            assert time.monotonic() < deadline, f"only workers {self.accepted_by()} accepted the token"
            time.sleep(0.01)


@dataclass(frozen=True)
class Trial:
    """One revocation under load, as the client saw it."""

    called: float  # time.monotonic() when revoke() was called
    returned: float  # ... and when it returned
    samples: list[Sample]

    @property
    def pids(self) -> set[str]:
        return {s.pid for s in self.samples}

    def late_accepts(self, bound: float) -> list[Sample]:
        """Accepted requests that started more than ``bound`` after revoke() returned."""
        return [s for s in self.samples if s.status == 200 and s.start - self.returned > bound]

    def last_accept(self, pid: str) -> float:
        """Seconds from revoke() returning to the start of the worker's last accepted request."""
        return max(s.start for s in self.samples if s.pid == pid and s.status == 200) - self.returned

    def first_reject(self, pid: str) -> float:
        """Seconds from the revoke() *call* to the start of the worker's first 401."""
        return min(s.start for s in self.samples if s.pid == pid and s.status == 401) - self.called


def revoke_under_load(
    base_url: str, admin: PATAuth, user: str, name: str, bound: float, ready: Callable[[], bool] = lambda: True
) -> Trial:
    """Mint a token, load both workers with it (and wait for ``ready()``), revoke it,
    and keep the load on until ``bound`` + :data:`SETTLE` seconds after the revocation."""
    new = admin.manager.create(user, name, ["repo:read"])
    with Hammer(base_url, new.token) as hammer:
        hammer.wait_for_workers(2)
        deadline = time.monotonic() + 5.0
        while not ready():
            assert time.monotonic() < deadline, "the workers are not ready"
            time.sleep(0.01)
        time.sleep(0.2 + random.uniform(0, 0.005))  # both workers answer from their local caches
        called = time.monotonic()
        admin.manager.revoke(new.record.id)
        returned = time.monotonic()
        time.sleep(bound + SETTLE)
        # The OS, not the test, picks which worker accepts a connection: keep the load
        # on until each worker has answered enough requests after the bound to judge it.
        hammer.wait_for_answers_after(returned + bound, MIN_ANSWERS_AFTER)
    assert not hammer.errors, hammer.errors[:3]
    return Trial(called, returned, list(hammer.samples))


def check_trial(trial: Trial, bound: float) -> None:
    assert len(trial.pids) == 2, f"expected two workers, got {trial.pids}"
    assert {s.status for s in trial.samples} <= {200, 401}, {s.status for s in trial.samples}
    assert all(s.status == 200 for s in trial.samples if s.end < trial.called)
    late = trial.late_accepts(bound)
    assert not late, f"{len(late)} requests accepted more than {bound}s after the revocation: {late[:3]}"
    for pid in trial.pids:  # each worker was asked, and refused, after the bound
        after = [s for s in trial.samples if s.pid == pid and s.start - trial.returned > bound]
        assert len(after) >= MIN_ANSWERS_AFTER and all(s.status == 401 for s in after), (pid, len(after))


def summary(label: str, values: list[float]) -> str:
    ms = [v * 1e3 for v in values]
    return (f"{label}: n={len(ms)} min {min(ms):.1f} ms, median {statistics.median(ms):.1f} ms, "
            f"p90 {percentile(ms, 0.9):.1f} ms, max {max(ms):.1f} ms")  # fmt: skip


def report(title: str, trials: list[Trial]) -> None:
    pids = [(t, pid) for t in trials for pid in sorted(t.pids)]
    requests = sum(len(t.samples) for t in trials)
    print(f"\n{title}: {len(trials)} revocations, {requests} requests")
    print("  " + summary("revoke() call to return", [t.returned - t.called for t in trials]))
    print("  " + summary("first 401 per worker, from the revoke() call", [t.first_reject(p) for t, p in pids]))
    print("  " + summary("last 200 per worker, from revoke() returning", [t.last_accept(p) for t, p in pids]))


# -- the tests ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("launcher", ["uvicorn", "gunicorn"])
def test_revocation_reaches_every_worker_through_redis(
    launcher: str, pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    """Two workers with Redis: once revoke() returns in this process, no request
    that starts later than REDIS_BOUND is accepted by either worker."""
    user = f"deploy-{uuid.uuid4().hex[:8]}"
    admin = PATAuth.from_url(pg_url, redis_url, cache_prefix=redis_prefix)
    raw = redis.Redis.from_url(redis_url)
    channel = redis_prefix + "invalidate"

    def both_subscribed() -> bool:  # each worker's listener is on the invalidation channel
        return dict(raw.pubsub_numsub(channel)).get(channel.encode()) == 2

    try:
        with launched(launcher, pg_url, redis_url, redis_prefix) as base_url:
            trials = []
            for i in range(TRIALS):
                trial = revoke_under_load(base_url, admin, user, f"t{i}", REDIS_BOUND, both_subscribed)
                check_trial(trial, REDIS_BOUND)
                trials.append(trial)
            if launcher == "gunicorn":
                check_forwarded_for(base_url, admin, user)
        report(f"{launcher}, 2 workers, PostgreSQL + Redis", trials)
    finally:
        raw.close()
        admin.close()


def check_forwarded_for(base_url: str, admin: PATAuth, user: str) -> None:
    """Behind the proxy gunicorn.conf.py trusts (loopback here), a token limited to
    a CIDR block sees the client address from X-Forwarded-For."""
    token = admin.manager.create(user, "office-only", ["repo:read"], allowed_cidrs=["203.0.113.0/24"]).token
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=10.0) as http:
        assert http.get("/repos", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 200
        assert http.get("/repos", headers={"X-Forwarded-For": "198.51.100.1"}).status_code == 401
        assert http.get("/repos").status_code == 401  # 127.0.0.1 itself is not in the block


@pytest.mark.parametrize(("launcher", "poll"), [("uvicorn", None), ("gunicorn", 1.0)])
def test_without_redis_revocation_takes_at_most_revocation_poll(
    launcher: str, poll: float | None, pg_url: str, redis_prefix: str
) -> None:
    """Two workers, no PAT_CACHE_URL: each worker learns of the revocation from
    the store's change feed, so acceptance stops within revocation_poll +
    TTL_MARGIN. The uvicorn example has the default (5 s); the gunicorn one
    gets PAT_REVOCATION_POLL=1."""
    user = f"deploy-{uuid.uuid4().hex[:8]}"
    settings = {} if poll is None else {"PAT_REVOCATION_POLL": str(poll)}
    bound = (poll or REVOCATION_POLL) + TTL_MARGIN
    admin = PATAuth.from_url(pg_url)
    try:
        with launched(launcher, pg_url, None, redis_prefix, **settings) as base_url:
            trial = revoke_under_load(base_url, admin, user, "no-redis", bound)
        check_trial(trial, bound)
        report(f"{launcher}, 2 workers, PostgreSQL only (revocation_poll {poll or REVOCATION_POLL:g} s)", [trial])
    finally:
        admin.close()


def test_env_example_matches_the_deploy_app() -> None:
    """Every variable of .env.example is read by app.py or gunicorn.conf.py, and
    every PAT_* variable app.py reads is in .env.example."""
    from pat_middleware.config import VARIABLES

    documented = set(dotenv(DEPLOY / ".env.example"))
    sources = (DEPLOY / "gunicorn.conf.py").read_text()
    read_elsewhere = {name for name in documented if name not in VARIABLES}
    assert {name for name in read_elsewhere if not re.search(f"[\"']{name}[\"']", sources)} == set()
    read = {name for name in VARIABLES if name not in ("PAT_PREFIX", "PAT_REALM")}
    assert read <= documented, read - documented


@pytest.mark.parametrize(
    ("variable", "value", "error"),
    [
        ("PAT_LOCAL_TTL", "soon", "ValueError: PAT_LOCAL_TTL must be a number of seconds (like 5 or 0.25), not 'soon'"),
        ("PAT_HASH_WORKERS", "0", "ValueError: PAT_HASH_WORKERS must be an integer between 1 and 256, not 0"),
        ("PAT_STORE_URL", None, "ValueError: PAT_STORE_URL is not set (e.g. postgresql://app@db.internal/app)"),
    ],
)
def test_deploy_app_refuses_bad_settings_at_start_up(variable: str, value: str | None, error: str) -> None:
    """A worker with a bad (or, for the store, no) setting stops at import with one clear line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAT_")}
    env["PAT_STORE_URL"] = "memory://"
    if value is None:
        del env[variable]
    else:
        env[variable] = value
    done = _run([sys.executable, "-c", "import examples.deploy.app"], env)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == error, done.stderr


def test_concurrent_rotate_and_revoke_from_two_processes(pg_url: str, redis_url: str, redis_prefix: str) -> None:
    """Process A rotates and process B revokes the same token at the same instant.

    Whoever wins, the old token ends revoked and its family holds at most one
    live token: A's new one if the rotation won (B's revoke then changed
    nothing, or moved the old token's revocation earlier), none if the
    revocation won (A's rotate then raised ``TokenRevoked(family_revoked=True)``
    and inserted nothing). Each token that must be dead is rejected by a
    third PATAuth that never saw it, so a positive entry left in Redis would
    show; the admin process, which had it cached, stops accepting it within
    REDIS_BOUND (the invalidation channel).
    """
    user = f"race-{uuid.uuid4().hex[:8]}"
    admin = make_auth(pg_url, redis_url, redis_prefix)
    third = make_auth(pg_url, redis_url, redis_prefix)
    raw = redis.Redis.from_url(redis_url)
    outcomes: dict[str, int] = {}
    try:
        with racers(2, pg_url, redis_url, redis_prefix) as (rotator, revoker):
            admin.verify(admin.manager.create(user, "warm-up", ["repo:read"]).token)  # starts the listener
            deadline = time.monotonic() + 5.0
            while not (admin.cache is not None and admin.cache.subscribed):
                assert time.monotonic() < deadline, "the admin process did not subscribe"
                time.sleep(0.01)
            for trial in range(40):
                old = admin.manager.create(user, f"race-{trial}", ["repo:read"])
                admin.verify(old.token)  # cached here and in Redis
                entry_key = f"{redis_prefix}{{{old.record.id}}}:e"
                assert raw.exists(entry_key) == 1
                # Every 5th trial one side starts 20 ms early (a sure winner each
                # way); the others start together, give or take a millisecond.
                skew = {0: -0.02, 1: 0.02}.get(trial % 5, random.uniform(-0.001, 0.001))
                at = time.time() + 0.05
                rotating = rotator.submit(act, "rotate", old.record.id, at + max(skew, 0))
                revoking = revoker.submit(act, "revoke", old.record.id, at - min(skew, 0))
                rotated, revoked = rotating.result(timeout=15), revoking.result(timeout=15)
                outcome = check_race_end_state(admin, third, old.record.id, old.token, rotated, revoked)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                assert raw.exists(entry_key) == 0, "the revoked token's positive entry is still in Redis"
    finally:
        raw.close()
        third.close()
        admin.close()
    print(f"\nrotate/revoke race, 40 trials: {outcomes}")
    assert outcomes.get("rotate won", 0) >= 8 and outcomes.get("revoke won", 0) >= 8, outcomes


def check_race_end_state(
    admin: PATAuth,
    third: PATAuth,
    old_id: str,
    old_token: str,
    rotated: tuple[object, ...],
    revoked: tuple[object, ...],
) -> str:
    """Assert one trial's end state; return which side won."""
    assert revoked[0] == "revoked", revoked  # revoke is idempotent: it never fails here
    old = admin.store.get(old_id)
    assert old is not None
    family = admin.store.list_family(old.family_id)
    now = datetime.now(UTC)
    live = [r.id for r in family if r.is_active(now)]
    assert old.state(now) == "revoked", old
    assert len(live) <= 1, f"two live tokens in one family: {live}"
    if rotated[0] == "rotated":
        new_id, new_token = rotated[1], rotated[2]
        assert live == [new_id] and [r.id for r in family] == [old_id, new_id]
        assert admin.store.get(str(new_id)).rotated_from == old_id  # type: ignore[union-attr]
        assert third.verify(str(new_token)).token_id == new_id
        outcome = "rotate won"
    else:
        assert rotated == ("family_revoked",), rotated
        assert live == [] and [r.id for r in family] == [old_id], family
        outcome = "revoke won"
    with pytest.raises(InvalidToken) as rejected:
        third.verify(old_token)
    assert rejected.value.reason == "revoked"
    deadline = time.monotonic() + REDIS_BOUND
    while True:  # the admin's own cached entry: dropped on the channel message
        try:
            admin.verify(old_token)
        except InvalidToken as exc:
            assert exc.reason == "revoked"
            break
        assert time.monotonic() < deadline, "the admin process still accepts the old token"
        time.sleep(0.002)
    return outcome
