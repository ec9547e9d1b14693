"""The cold-start burst: N concurrent requests carrying one valid token no cache has seen.

Run: ``python bench/cold.py`` (well under two minutes with the defaults). For
each burst size (``--sizes``, default 1 8 64) and each edge, ``--rounds``
bursts, each with a token minted just before it by another ``PATAuth``, so
the serving process's caches are cold. SQLite store, the default hasher
(``Argon2Hasher()``: argon2id, m=19 MiB, t=2), no Redis unless ``--cache-url``:

* ASGI: ``PATMiddleware`` on a Starlette app, driven in-process by
  ``httpx.AsyncClient`` over ``ASGITransport`` (N tasks at once), in a fresh
  child process per size;
* WSGI: a Flask app with the ``PAT`` extension under werkzeug's threaded
  server, in a fresh subprocess per size; N client threads, each connected
  first, then released together.

Counted in the serving process: argon2 runs, by a counting wrapper of
``Argon2Hasher`` given as ``PATAuth(hasher=...)`` (``verify()`` calls, plus
``hash()`` calls should a token be rehashed; and the most running at once);
store reads, by a counter on the store's ``get()`` (and on its
``async_store``'s, when it has one). Timed by the client: each request's wait.
Measured: the serving process's peak RSS during a burst above its RSS just
before (``VmHWM``, reset through ``/proc/<pid>/clear_refs``, and ``VmRSS``
polled every 2 ms).

Printed per edge and size: argon2 runs and store reads per burst (median of
the rounds, and the most), their ratio to the requests, the most argon2 runs
at once, p50/p99 wait over every request of every round, and the largest RSS
growth. Without single-flight a burst of N runs argon2 N times; with it, once.
``--json`` prints the results as JSON instead of the table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from pat_middleware import Argon2Hasher, PATAuth
from pat_middleware.core.hashing import Hasher
from pat_middleware.stores import store_from_url

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# This folder is first on sys.path when this file runs as a script, and its redis.py would
# shadow the redis package (imported later, by RedisCache): drop it.
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != HERE]
START_TIMEOUT = 30.0
REQUEST_TIMEOUT = 120.0
#: Seconds between bursts: the last-used writes of the previous one (a background thread) finish.
PAUSE = 0.3


# -- counting, in the serving process --------------------------------------------------------------


class CountingHasher:
    """A :class:`~pat_middleware.core.hashing.Hasher` that counts the argon2 runs of the one it wraps."""

    def __init__(self, inner: Hasher) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self.verifies = self.hashes = self.running = self.most = 0

    @contextlib.contextmanager
    def _run(self) -> Iterator[None]:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1

    def verify(self, stored: str, secret: str) -> bool:
        with self._lock:
            self.verifies += 1
        with self._run():
            return self.inner.verify(stored, secret)

    def hash(self, secret: str) -> str:
        with self._lock:
            self.hashes += 1
        with self._run():
            return self.inner.hash(secret)

    def needs_rehash(self, stored: str) -> bool:
        return self.inner.needs_rehash(stored)

    def reset(self) -> None:
        with self._lock:
            self.verifies = self.hashes = self.most = 0

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"verifies": self.verifies, "hashes": self.hashes, "most_at_once": self.most}


class StoreReads:
    """Counts ``get()`` on a store, and on its ``async_store`` (what PATAuth's async side uses) if any."""

    def __init__(self, store: Any) -> None:
        self.count = 0
        self._lock = threading.Lock()
        sync_get = store.get

        def get(token_id: str) -> Any:
            self._add()
            return sync_get(token_id)

        store.get = get
        async_store = getattr(store, "async_store", None)
        if async_store is not None:
            async_get = async_store.get

            async def aget(token_id: str) -> Any:
                self._add()
                return await async_get(token_id)

            async_store.get = aget

    def _add(self) -> None:
        with self._lock:
            self.count += 1

    def reset(self) -> None:
        with self._lock:
            self.count = 0


@dataclass
class Engine:
    """The serving process's PATAuth with its counters."""

    auth: PATAuth
    hasher: CountingHasher
    reads: StoreReads

    @classmethod
    def open(cls, options: argparse.Namespace) -> Engine:
        store = store_from_url(options.store_url)
        reads = StoreReads(store)
        hasher = CountingHasher(Argon2Hasher())
        cache = None
        if options.cache_url:
            from pat_middleware.cache.redis import RedisCache

            cache = RedisCache(options.cache_url, prefix=options.cache_prefix)
        auth = PATAuth(store, cache=cache, hasher=hasher, hash_workers=options.hash_workers)
        return cls(auth, hasher, reads)

    def reset(self) -> None:
        self.hasher.reset()
        self.reads.reset()

    def counts(self) -> dict[str, int]:
        return {**self.hasher.counts(), "store_reads": self.reads.count}


# -- memory -----------------------------------------------------------------------------------------


def _status_kib(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field_name} in /proc/{pid}/status")


class RssPeak:
    """Peak RSS of process ``pid`` while the block runs, above its RSS when it started (KiB)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.growth_kib = 0
        self._stop = threading.Event()
        self._most = 0

    def __enter__(self) -> RssPeak:
        try:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            self._hwm = True
        except OSError:
            self._hwm = False
        self.before = self._most = _status_kib(self.pid, "VmRSS")
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            with contextlib.suppress(OSError, RuntimeError):
                self._most = max(self._most, _status_kib(self.pid, "VmRSS"))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._sampler.join()
        peak = self._most
        if self._hwm:
            peak = max(peak, _status_kib(self.pid, "VmHWM"))
        self.growth_kib = peak - self.before


# -- results ----------------------------------------------------------------------------------------


@dataclass
class Burst:
    """One burst of ``n`` requests with one fresh token."""

    n: int
    verifies: int
    hashes: int
    most_at_once: int
    store_reads: int
    waits: list[float]  # seconds, one per request
    statuses: dict[str, int]
    rss_growth_kib: int

    @property
    def argon2(self) -> int:
        return self.verifies + self.hashes


@dataclass
class Result:
    edge: str
    n: int
    bursts: list[Burst] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        runs = [b.argon2 for b in self.bursts]
        reads = [b.store_reads for b in self.bursts]
        waits = sorted(w for b in self.bursts for w in b.waits)
        statuses: Counter[str] = Counter()
        for b in self.bursts:
            statuses.update(b.statuses)
        return {
            "argon2_median": statistics.median(runs),
            "argon2_max": max(runs),
            "argon2_per_request": statistics.median(runs) / self.n,
            "argon2_most_at_once": max(b.most_at_once for b in self.bursts),
            "store_reads_median": statistics.median(reads),
            "store_reads_max": max(reads),
            "wait_p50_ms": percentile(waits, 0.50) * 1e3,
            "wait_p99_ms": percentile(waits, 0.99) * 1e3,
            "rss_growth_mib": max(b.rss_growth_kib for b in self.bursts) / 1024,
            "statuses": dict(statuses),
        }


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def mint(store_url: str, count: int) -> list[str]:
    """``count`` fresh tokens, made by a PATAuth of their own (the server's caches never see them)."""
    minter = PATAuth.from_url(store_url)  # the default Argon2Hasher: the server verifies without a rehash
    try:
        name = uuid.uuid4().hex[:8]
        return [
            minter.manager.create("bench", f"cold {name} {i}", ["repo:read"], expires_in=timedelta(days=1)).token
            for i in range(count)
        ]
    finally:
        minter.close()


# -- the ASGI edge: in a child process, in-process requests ---------------------------------------


def asgi_child(options: argparse.Namespace) -> None:
    """``--child-asgi``: the bursts of one size; prints them as one JSON line."""
    bursts = asyncio.run(_asgi_bursts(options))
    print(json.dumps([asdict(b) for b in bursts]), flush=True)


async def _asgi_bursts(options: argparse.Namespace) -> list[Burst]:
    import httpx
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from pat_middleware.starlette import PATMiddleware, requires_scopes

    @requires_scopes("repo:read")
    async def repos(request: Request) -> Response:
        return Response(b"ok", media_type="text/plain")

    n = options.child_asgi
    tokens = mint(options.store_url, options.rounds + 1)
    engine = Engine.open(options)
    app = Starlette(routes=[Route("/repos", repos)], middleware=[Middleware(PATMiddleware, auth=engine.auth)])
    transport = httpx.ASGITransport(app=app)
    bursts: list[Burst] = []
    async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=REQUEST_TIMEOUT) as client:

        async def one(token: str) -> tuple[float, int]:
            start = time.perf_counter()
            response = await client.get("/repos", headers={"Authorization": f"Bearer {token}"})
            return time.perf_counter() - start, response.status_code

        await one(tokens[0])  # warm up: imports, thread pools, the store's connections
        for token in tokens[1:]:
            await asyncio.sleep(PAUSE)
            engine.reset()
            with RssPeak(os.getpid()) as rss:
                answers = await asyncio.gather(*(one(token) for _ in range(n)))
            bursts.append(_burst(n, engine.counts(), answers, rss.growth_kib))
    await engine.auth.aclose()
    return bursts


def _burst(n: int, counts: dict[str, int], answers: list[tuple[float, int]], growth_kib: int) -> Burst:
    statuses = Counter(str(status) for _, status in answers)
    return Burst(n=n, **counts, waits=[w for w, _ in answers], statuses=dict(statuses), rss_growth_kib=growth_kib)


def run_asgi(n: int, options: argparse.Namespace) -> Result:
    argv = [sys.executable, __file__, "--child-asgi", str(n), *_shared_argv(options)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"the ASGI child failed ({done.returncode}):\n{done.stderr[-4000:]}")
    bursts = [Burst(**b) for b in json.loads(done.stdout.strip().splitlines()[-1])]
    return Result("asgi", n, bursts)


def _shared_argv(options: argparse.Namespace) -> list[str]:
    argv = ["--store-url", options.store_url, "--rounds", str(options.rounds)]
    argv += ["--hash-workers", str(options.hash_workers), "--cache-prefix", options.cache_prefix]
    if options.cache_url:
        argv += ["--cache-url", options.cache_url]
    return argv


# -- the WSGI edge: Flask under werkzeug's threaded server in a subprocess -------------------------


def wsgi_server(options: argparse.Namespace) -> None:
    """``--serve-wsgi PORT``: the Flask app with counters at ``/_bench/counts`` and ``/_bench/reset``."""
    from flask import Flask
    from werkzeug.serving import make_server

    from pat_middleware.flask import PAT, scopes_required

    engine = Engine.open(options)
    app = Flask("cold")
    PAT(app, auth=engine.auth)

    @app.get("/repos")
    @scopes_required("repo:read")
    def repos() -> tuple[str, int, dict[str, str]]:
        return "ok", 200, {"Content-Type": "text/plain"}

    @app.get("/_bench/counts")
    def counts() -> dict[str, int]:
        return engine.counts()

    @app.post("/_bench/reset")
    def reset() -> dict[str, int]:
        engine.reset()
        return {}

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = make_server("127.0.0.1", options.serve_wsgi, app, threaded=True)
    print("ready", flush=True)
    server.serve_forever()


def _call(port: int, method: str, path: str) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: {response.status} {body[:200]!r}")
        return json.loads(body)  # type: ignore[no-any-return]
    finally:
        conn.close()


def thread_burst(port: int, token: str, n: int) -> list[tuple[float, int]]:
    """``n`` threads, each connected, then released together to send ``GET /repos``."""
    ready = threading.Barrier(n)
    answers: list[tuple[float, int]] = []
    lock = threading.Lock()

    def one() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
        try:
            conn.connect()
            ready.wait(timeout=REQUEST_TIMEOUT)
            start = time.perf_counter()
            conn.request("GET", "/repos", headers={"Authorization": f"Bearer {token}"})
            response = conn.getresponse()
            response.read()
            answer = (time.perf_counter() - start, response.status)
        except (OSError, threading.BrokenBarrierError) as exc:
            answer = (0.0, 0)
            print(f"request failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            conn.close()
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(REQUEST_TIMEOUT + 10)
    return answers


def run_wsgi(n: int, options: argparse.Namespace) -> Result:
    tokens = mint(options.store_url, options.rounds + 1)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    argv = [sys.executable, __file__, "--serve-wsgi", str(port), *_shared_argv(options)]
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            assert server.stdout is not None
            if server.stdout.readline().strip() != "ready":  # blocks until the server is up (or died)
                log.seek(0)
                raise SystemExit(f"the WSGI server did not start:\n{log.read()[-4000:]}")
            result = Result("wsgi", n)
            thread_burst(port, tokens[0], 1)  # warm up
            for token in tokens[1:]:
                time.sleep(PAUSE)
                _call(port, "POST", "/_bench/reset")
                with RssPeak(server.pid) as rss:
                    answers = thread_burst(port, token, n)
                result.bursts.append(_burst(n, _call(port, "GET", "/_bench/counts"), answers, rss.growth_kib))
        finally:
            server.terminate()
            server.wait(15)
    return result


# -- main -------------------------------------------------------------------------------------------


def print_table(results: list[Result], options: argparse.Namespace) -> None:
    cache = options.cache_url or "none"
    print(f"store SQLite, hasher {Argon2Hasher()!r}, shared cache {cache}, hash_workers {options.hash_workers}")
    print(f"{options.rounds} bursts per edge and size, one fresh token each; ASGI in-process, WSGI werkzeug threaded")
    header = (
        f"{'edge':5} {'N':>3} {'argon2/burst':>13} {'per request':>11} {'at once':>7} "
        f"{'store reads':>11} {'p50 ms':>8} {'p99 ms':>8} {'RSS +MiB':>8}  statuses"
    )
    print(header)
    for result in results:
        s = result.summary()
        runs = f"{s['argon2_median']:g} ({s['argon2_max']})"
        reads = f"{s['store_reads_median']:g} ({s['store_reads_max']})"
        statuses = " ".join(f"{k}x{v}" for k, v in sorted(s["statuses"].items()))
        print(
            f"{result.edge:5} {result.n:>3} {runs:>13} {s['argon2_per_request']:11.2f} "
            f"{s['argon2_most_at_once']:>7} {reads:>11} {s['wait_p50_ms']:8.1f} {s['wait_p99_ms']:8.1f} "
            f"{s['rss_growth_mib']:8.1f}  {statuses}"
        )
    print("argon2/burst and store reads: median of the bursts (most); per request: median / N")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 64], help="concurrent requests per burst")
    parser.add_argument("--rounds", type=int, default=3, help="bursts per edge and size")
    parser.add_argument("--edges", nargs="+", choices=["asgi", "wsgi"], default=["asgi", "wsgi"])
    parser.add_argument("--hash-workers", type=int, default=2, help="PATAuth(hash_workers=...)")
    parser.add_argument("--cache-url", help="a Redis URL: a shared cache in front of the store (default: none)")
    parser.add_argument("--cache-prefix", default=f"pat-bench-cold:{uuid.uuid4().hex[:8]}:")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--store-url", help=argparse.SUPPRESS)
    parser.add_argument("--child-asgi", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-wsgi", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child_asgi:
        asgi_child(options)
        return
    if options.serve_wsgi:
        wsgi_server(options)
        return

    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        options.store_url = f"sqlite:///{Path(tmp) / 'tokens.db'}"
        try:
            for n in options.sizes:
                for edge in options.edges:
                    results.append(run_asgi(n, options) if edge == "asgi" else run_wsgi(n, options))
        finally:
            if options.cache_url:
                _drop_keys(options.cache_url, options.cache_prefix)
    if options.json:
        document = {
            "config": {
                "store": "sqlite",
                "hasher": repr(Argon2Hasher()),
                "cache_url": options.cache_url,
                "hash_workers": options.hash_workers,
                "rounds": options.rounds,
                "wsgi_server": "werkzeug threaded",
            },
            "results": [
                {"edge": r.edge, "n": r.n, "summary": r.summary(), "bursts": [asdict(b) for b in r.bursts]}
                for r in results
            ],
        }
        print(json.dumps(document, indent=2))
    else:
        print_table(results, options)


def _drop_keys(url: str, prefix: str) -> None:
    import redis

    with redis.Redis.from_url(url) as client:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)


if __name__ == "__main__":
    main()
