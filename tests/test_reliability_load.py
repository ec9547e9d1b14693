"""Reliability: cold-start bursts on real servers, and a flood of forged secrets.

Bursts: a server runs :mod:`burst_app` (a PATAuth with a counting argon2
hasher and a counted store, on a SQLite file the test process shares) in a
subprocess; the test mints fresh tokens and fires concurrent requests that
carry them, all sent at once (one pre-opened connection per client thread,
released together by a barrier). The app's counters then say how many argon2
runs and store reads the burst cost, how many argon2 runs overlapped, and how
many requests were in flight at once (proof the burst overlapped).

* ASGI: ``uvicorn`` (one worker), 64 requests with one token: 1 argon2 run,
  1 store read; then 16 distinct tokens: at most ``hash_workers`` argon2 runs
  at once.
* WSGI: Flask under ``gunicorn -k gthread --threads 32``, 32 requests with one
  token: 1 argon2 run, 1 store read; then 32 distinct tokens: at most
  ``hash_workers`` at once. Another server takes three bursts of 32 distinct
  tokens: its peak RSS (``VmHWM``) may grow at most ``hash_workers`` x 19 MiB
  (argon2's memory) + 20 MiB.

Flood: 2,000 forged secrets (valid checksum, wrong secret) for one key id
from 50 client addresses, through the ASGI middleware, with
``failure_limit=10``: at most 2 x ``failure_limit`` argon2 runs, none
accepted, while the owner's uncached token still works from an address it
used before (``last_used_ips``) and is throttled from a new one. Then the same
flood split over two processes sharing one Redis prefix.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from burst_app import build_auth, starlette_app
from flood_proc import forged
from test_example_starlette import ROOT, Process, free_port, wait_until_up

from pat_middleware import PATAuth
from pat_middleware.core.events import Event

pytestmark = pytest.mark.slow

HASH_WORKERS = 2
#: argon2id's memory per run (Argon2Hasher's default m=19 MiB), in KiB.
ARGON2_KIB = 19 * 1024
#: RSS a threaded server may grow by, besides argon2's blocks (threads, connections, caches).
RSS_SLACK_KIB = 20 * 1024
FAILURE_LIMIT = 10


# -- servers and bursts -----------------------------------------------------------------------


@contextmanager
def serving(argv: list[str], store_url: str) -> Iterator[str]:
    """Run a server on :mod:`burst_app`; yield its base URL; SIGTERM it, no traceback."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAT_")}
    env.update(PAT_STORE_URL=store_url, PAT_HASH_WORKERS=str(HASH_WORKERS))
    process = Process([arg.replace("{port}", str(port)) for arg in argv], env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base_url, process)
        yield base_url
    finally:
        code = process.stop(signal.SIGTERM)
    output = process.text()
    assert code in (0, -signal.SIGTERM), output
    assert "Traceback" not in output, output


UVICORN = [sys.executable, "-m", "uvicorn", "--factory", "tests.burst_app:asgi_app",
           "--host", "127.0.0.1", "--port", "{port}", "--workers", "1", "--log-level", "warning"]  # fmt: skip
GUNICORN = [sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", "1", "--threads", "32",
            "--bind", "127.0.0.1:{port}", "--log-level", "warning", "tests.burst_app:wsgi_app()"]  # fmt: skip


@dataclass(frozen=True)
class Answer:
    sent: float  # time.monotonic() just before the request was sent
    answered: float
    status: int


def burst(base_url: str, tokens: list[str]) -> list[Answer]:
    """One client thread per token, each on its own pre-opened connection; all
    send ``GET /whoami`` at the same moment (a barrier). Bounded by timeouts."""
    answers: list[Answer] = []
    errors: list[str] = []
    ready = threading.Barrier(len(tokens), timeout=30)

    def client(token: str) -> None:
        try:
            with httpx.Client(base_url=base_url, timeout=30.0) as http:
                http.get("/health").raise_for_status()  # the connection is open before the burst
                ready.wait()
                sent = time.monotonic()
                response = http.get("/whoami", headers={"Authorization": f"Bearer {token}"})
                answers.append(Answer(sent, time.monotonic(), response.status_code))
        except Exception as exc:  # reported by the test
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=client, args=(token,), daemon=True) for token in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[:3]
    assert len(answers) == len(tokens)
    return answers


def counters(base_url: str, reset: bool = False) -> dict[str, int]:
    response = (httpx.post if reset else httpx.get)(base_url + "/counters", timeout=10.0)
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size of a process (``VmHWM``), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


def waits(answers: list[Answer]) -> str:
    ms = sorted((a.answered - a.sent) * 1e3 for a in answers)
    return f"wait p50 {statistics.median(ms):.0f} ms, max {ms[-1]:.0f} ms"


#: Bursts tried (each with another fresh token) until one overlaps enough to prove
#: the point: on a loaded machine the leader may finish before the last requests land.
BURST_ATTEMPTS = 3


def check_single_flight(base_url: str, tokens: list[str], clients: int, label: str) -> None:
    """``clients`` concurrent requests with one fresh token: all 200, 1 argon2 run,
    1 store read; again with the next token until at least half were in flight at once."""
    for token in tokens:
        counters(base_url, reset=True)
        answers = burst(base_url, [token] * clients)
        seen = counters(base_url)
        print(
            f"\n{label}, {clients} concurrent requests, one fresh token: argon2 runs {seen['argon2_runs']}, "
            f"store reads {seen['store_gets']}, peak in flight {seen['peak_in_flight']}, {waits(answers)}"
        )
        assert [a.status for a in answers] == [200] * clients
        assert seen["argon2_runs"] == 1 and seen["store_gets"] == 1, seen
        if seen["peak_in_flight"] >= clients // 2:
            return
    pytest.fail(f"no burst overlapped: at most {seen['peak_in_flight']} of {clients} requests in flight")


def check_distinct(base_url: str, tokens: list[str], label: str) -> dict[str, int]:
    """Concurrent requests with distinct fresh tokens: one argon2 run and one store
    read each, never more than HASH_WORKERS argon2 runs at once."""
    counters(base_url, reset=True)
    answers = burst(base_url, tokens)
    seen = counters(base_url)
    print(
        f"{label}, {len(tokens)} distinct fresh tokens: argon2 runs {seen['argon2_runs']}, "
        f"at most {seen['argon2_max_running']} at once, store reads {seen['store_gets']}, {waits(answers)}"
    )
    assert [a.status for a in answers] == [200] * len(tokens)
    assert seen["argon2_runs"] == len(tokens) and seen["store_gets"] == len(tokens), seen
    assert seen["argon2_max_running"] <= HASH_WORKERS, seen
    return seen


def mint(store_url: str, count: int) -> list[str]:
    """``count`` fresh argon2 tokens (hashed on two threads: argon2 releases the GIL)."""
    admin = PATAuth.from_url(store_url)
    user = f"burst-{uuid.uuid4().hex[:6]}"
    try:
        with ThreadPoolExecutor(2) as pool:
            return list(pool.map(lambda i: admin.manager.create(user, f"t{i}", []).token, range(count)))
    finally:
        admin.close()


def test_cold_burst_asgi_uvicorn(tmp_path: Path) -> None:
    """uvicorn, one worker: 64 concurrent cold requests with one token cost one
    argon2 run and one store read; 16 distinct tokens run argon2 at most
    HASH_WORKERS at a time."""
    store_url = f"sqlite:///{tmp_path / 'tokens.db'}"
    tokens = mint(store_url, BURST_ATTEMPTS + 16)
    fresh, distinct = tokens[:BURST_ATTEMPTS], tokens[BURST_ATTEMPTS:]
    with serving(UVICORN, store_url) as base_url:
        check_single_flight(base_url, fresh, 64, "ASGI (uvicorn)")
        check_distinct(base_url, distinct, "ASGI (uvicorn)")


def test_cold_burst_wsgi_gunicorn_threads(tmp_path: Path) -> None:
    """Flask under gunicorn gthread (32 threads): 32 concurrent cold requests with
    one token cost one argon2 run and one store read; 32 distinct tokens run
    argon2 at most HASH_WORKERS at a time."""
    store_url = f"sqlite:///{tmp_path / 'tokens.db'}"
    tokens = mint(store_url, BURST_ATTEMPTS + 32)
    fresh, distinct = tokens[:BURST_ATTEMPTS], tokens[BURST_ATTEMPTS:]
    with serving(GUNICORN, store_url) as base_url:
        check_single_flight(base_url, fresh, 32, "WSGI (gunicorn gthread)")
        check_distinct(base_url, distinct, "WSGI (gunicorn gthread)")


#: Bursts of 32 distinct fresh tokens the RSS test sends at most (it stops at
#: the first that breaks the bound): freed argon2 blocks pile up over bursts.
RSS_ROUNDS = 6


def test_wsgi_peak_rss_growth_is_bounded_by_hash_workers(tmp_path: Path) -> None:
    """Flask under gunicorn gthread (32 threads), up to RSS_ROUNDS bursts of 32
    distinct fresh tokens: the worker's peak RSS (VmHWM) grows at most
    HASH_WORKERS x 19 MiB (argon2's memory) + 20 MiB over its value before the
    first request with a token."""
    store_url = f"sqlite:///{tmp_path / 'tokens.db'}"
    bound = HASH_WORKERS * ARGON2_KIB + RSS_SLACK_KIB
    with serving(GUNICORN, store_url) as base_url:
        pid = counters(base_url)["pid"]
        before = vm_hwm_kib(pid)
        growth: list[int] = []
        for round_ in range(RSS_ROUNDS):
            check_distinct(base_url, mint(store_url, 32), f"WSGI (gunicorn gthread), round {round_}")
            growth.append(vm_hwm_kib(pid) - before)
            if growth[-1] > bound:
                break
    rounds = ", ".join(f"+{kib / 1024:.1f}" for kib in growth)
    print(f"  worker peak RSS {before / 1024:.0f} MiB before, growth after each round {rounds} MiB "
          f"(bound +{bound / 1024:.0f} MiB)")  # fmt: skip
    assert max(growth) <= bound


# -- the flood ------------------------------------------------------------------------------------

FLOOD = 2000
ADDRESSES = [f"10.2.{i // 250}.{i % 250 + 1}" for i in range(50)]
OWNER_IP = "10.1.0.1"
NEW_IP = "10.3.0.1"


def test_flood_from_50_addresses_through_the_asgi_middleware(tmp_path: Path) -> None:
    """2,000 forged secrets for one key id from 50 addresses, 64 at a time: at most
    2 x failure_limit argon2 runs, none accepted. Meanwhile the owner's uncached
    token is accepted from an address in its last_used_ips and throttled from a
    brand-new one (tried first: once the owner's token is verified it is cached,
    and a cached token works from every address)."""
    events: list[Event] = []
    auth, count = build_auth(f"sqlite:///{tmp_path / 'tokens.db'}", failure_limit=FAILURE_LIMIT, on_event=events.append)
    app = starlette_app(auth, count, close_auth=False)
    owner = auth.manager.create("alice", "ci", []).token
    record_id = owner[4:16]
    header = {"Authorization": f"Bearer {owner}"}

    def client(ip: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(ip, 50000)), base_url="http://api")

    async def scenario() -> tuple[list[int], int, int, int]:
        async with client(OWNER_IP) as http:
            assert (await http.get("/whoami", headers=header)).status_code == 200
        deadline = time.monotonic() + 10
        while OWNER_IP not in getattr(auth.store.get(record_id), "last_used_ips", ()):
            assert time.monotonic() < deadline, "the last-used write did not reach the store"
            await asyncio.sleep(0.01)
        auth.verifier.local.clear()  # the owner's token is no longer cached
        count.reset()

        flooders = [client(ip) for ip in ADDRESSES]
        statuses: list[int] = []
        limit = asyncio.Semaphore(64)

        async def attempt(i: int, token: str) -> None:
            async with limit:
                response = await flooders[i % len(flooders)].get(
                    "/whoami", headers={"Authorization": f"Bearer {token}"}
                )
                statuses.append(response.status_code)

        flood = asyncio.gather(*(attempt(i, t) for i, t in enumerate(forged(owner[:16], 0, FLOOD))))
        while len(statuses) < FLOOD // 4:  # the key id is flooded by now
            await asyncio.sleep(0.001)
        during = len(statuses)  # answers so far when the owner's requests are sent (they queue behind the flood's)
        async with client(NEW_IP) as http:  # first: once accepted, the token is cached for every address
            new = (await http.get("/whoami", headers=header)).status_code
        async with client(OWNER_IP) as http:
            known = (await http.get("/whoami", headers=header)).status_code
        await flood
        for http in flooders:
            await http.aclose()
        return statuses, known, new, during

    try:
        started = time.monotonic()
        statuses, known, new, during = asyncio.run(scenario())
        seconds = time.monotonic() - started
    finally:
        auth.close()
    seen = count.snapshot()
    reasons: dict[str, int] = {}
    for event in events:
        if event.kind == "failed" and event.client_ip in ADDRESSES:
            reasons[event.reason or ""] = reasons.get(event.reason or "", 0) + 1
    print(
        f"\nflood, {FLOOD} forged secrets from {len(ADDRESSES)} addresses, failure_limit {FAILURE_LIMIT}: "
        f"argon2 runs on forged secrets {seen['argon2_mismatched']}, reasons {reasons}, {seconds:.1f} s; "
        f"owner's requests sent after {during} answers: known address {known}, new address {new}"
    )
    assert len(statuses) == FLOOD and set(statuses) == {401}, "a forged token was accepted"
    assert seen["argon2_mismatched"] <= 2 * FAILURE_LIMIT, seen
    assert set(reasons) == {"bad_secret", "throttled"} and reasons["bad_secret"] == seen["argon2_mismatched"]
    assert during < FLOOD, "the owner was checked after the flood, not during it"
    assert known == 200 and seen["argon2_matched"] == 1, "the owner's known address was refused during the flood"
    assert new == 401
    assert [e.reason for e in events if e.client_ip == NEW_IP] == ["throttled"]


@pytest.mark.redis
def test_flood_split_over_two_processes_sharing_redis(tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    """The same flood from two processes (1,000 forged secrets each, all 50
    addresses, same Redis prefix, started together): combined argon2 runs at
    most 2 x failure_limit + 2 x hash_workers while Redis answers every call
    (each process's own budget when it did not); none accepted."""
    store_url = f"sqlite:///{tmp_path / 'tokens.db'}"
    admin = PATAuth.from_url(store_url)
    try:
        owner = admin.manager.create("alice", "ci", []).token
    finally:
        admin.close()
    start_at = time.time() + 3.0  # both interpreters are up and built by then
    procs = []
    for index in range(2):
        config: dict[str, Any] = {
            "store_url": store_url, "cache_url": redis_url, "cache_prefix": redis_prefix,
            "head": owner[:16], "first": index * FLOOD // 2, "count": FLOOD // 2,
            "addresses": ADDRESSES, "failure_limit": FAILURE_LIMIT, "start_at": start_at,
        }  # fmt: skip
        argv = [sys.executable, str(ROOT / "tests" / "flood_proc.py"), json.dumps(config)]
        procs.append(subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=50)
        assert proc.returncode == 0 and "Traceback" not in err, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    runs = [r["argon2_mismatched"] for r in results]
    outcomes = [r["outcomes"] for r in results]
    print(
        f"\nflood over two processes sharing Redis: argon2 runs {runs} (total {sum(runs)}, bound "
        f"{2 * FAILURE_LIMIT + 2 * HASH_WORKERS}), outcomes {outcomes}, "
        f"{max(r['seconds'] for r in results):.1f} s"
    )
    assert all("accepted" not in o for o in outcomes)
    assert sum(sum(o.values()) for o in outcomes) == FLOOD
    if any(r["cache_failures"] for r in results):
        # Redis did not answer every call (an outage, or a timeout on a starved machine):
        # for those calls each process's own counts decide, so each may spend its own
        # per-key budget (key_failure_limit = 2 x failure_limit), and no more.
        print(f"Redis calls failed during the flood: {[r['cache_failures'] for r in results]}; local bounds apply")
        assert sum(runs) <= 2 * (2 * FAILURE_LIMIT) + 2 * HASH_WORKERS
    else:
        assert sum(runs) <= 2 * FAILURE_LIMIT + 2 * HASH_WORKERS
