"""What the middlewares cost under a real server: uvicorn + wrk, server CPU from /proc.

Run: ``python bench/server.py`` (needs ``wrk`` on PATH: ``apt-get install wrk``,
and the ``bench`` extra for uvloop/httptools: ``pip install -e ".[bench]"``).

One uvicorn process (uvloop + httptools when installed, pinned to core 0 with
``taskset``) serves ``bench/server_app.py``: the same endpoint bare, behind a
hand-written pure ASGI middleware doing one dict lookup (the floor), behind
Starlette's ``AuthenticationMiddleware`` with a dict backend, and behind
``PATMiddleware`` with a cached token (expiry header on, and off). ``wrk -t1
-c32`` pinned to core 1 loads one mount at a time for ``--seconds``, in
interleaved rounds (each round loads every mount once, in a shuffled order).

Per mount, the median over the rounds of:

* requests per second, and its ratio to the bare mount;
* server CPU per request: the uvicorn process's utime + stime (from
  ``/proc/<pid>/stat``) over the run, divided by the requests wrk completed;
  and what that adds to the bare mount's.

Targets (issue 12): PATMiddleware >= 0.95 x bare req/s, and no more CPU per
request added than Starlette's AuthenticationMiddleware.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def wait_until_up(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the server did not come up")


def pinned(core: int, command: list[str]) -> list[str]:
    """``command`` pinned to one core when taskset exists and the core does."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > core:
        return ["taskset", "-c", str(core), *command]
    return command


@contextmanager
def server(command: list[str], env: dict[str, str], port: int) -> Iterator[int]:
    """Start the server, yield its pid, stop it."""
    proc = subprocess.Popen(pinned(0, command), env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_up(port)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if "Traceback" in (err or ""):
            print(err, file=sys.stderr)


_RPS = re.compile(r"Requests/sec:\s+([0-9.]+)")
_TOTAL = re.compile(r"([0-9]+) requests in")
_NON2XX = re.compile(r"Non-2xx or 3xx responses: ([0-9]+)")


def load(url: str, token: str, seconds: float, connections: int) -> tuple[float, int]:
    """(requests per second, requests completed) from one wrk run."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "-H", f"Authorization: Bearer {token}", url]
    out = subprocess.run(pinned(1, command), capture_output=True, text=True, check=True).stdout
    if (bad := _NON2XX.search(out)) is not None:
        raise SystemExit(f"{url}: {bad.group(1)} responses were not 2xx")
    rps, total = _RPS.search(out), _TOTAL.search(out)
    if rps is None or total is None:
        raise SystemExit(f"cannot read wrk's output:\n{out}")
    return float(rps.group(1)), int(total.group(1))


def measure(
    pid: int, base_url: str, token: str, mounts: list[str], rounds: int, seconds: float, connections: int
) -> dict[str, list[tuple[float, float]]]:
    """Per mount, per round: (req/s, server CPU µs per request)."""
    samples: dict[str, list[tuple[float, float]]] = {m: [] for m in mounts}
    for mount in mounts:  # warm up: the cold verification, caches, code paths
        load(f"{base_url}/{mount}", token, 1, connections)
    for _ in range(rounds):
        order = mounts[:]
        random.shuffle(order)
        for mount in order:
            before = cpu_seconds(pid)
            rps, total = load(f"{base_url}/{mount}", token, seconds, connections)
            samples[mount].append((rps, (cpu_seconds(pid) - before) / total * 1e6))
    return samples


def report(samples: dict[str, list[tuple[float, float]]], labels: dict[str, str], bare: str) -> None:
    base_rps = statistics.median(s[0] for s in samples[bare])
    base_cpu = statistics.median(s[1] for s in samples[bare])
    width = max(len(v) for v in labels.values()) + 2
    print(f"{'mount':{width}} {'req/s':>9} {'x bare':>7} {'CPU µs/req':>11} {'added':>8}")
    for mount, label in labels.items():
        rps = statistics.median(s[0] for s in samples[mount])
        cpu = statistics.median(s[1] for s in samples[mount])
        print(f"{label:{width}} {rps:9.0f} {rps / base_rps:7.3f} {cpu:11.1f} {cpu - base_cpu:+8.1f}")


def mint(store_url: str) -> str:
    from pat_middleware import PATAuth

    auth = PATAuth.from_url(store_url)
    try:
        return auth.manager.create("bench", "bench", ["repo:read"], expires_in=timedelta(days=1)).token
    finally:
        auth.close()


LABELS = {
    "bare": "bare",
    "floor": "pure ASGI, one dict lookup (floor)",
    "starlette": "Starlette AuthenticationMiddleware (dict)",
    "pat": "PATMiddleware, cached token",
    "pat-noexp": "  same, expiry_header=None",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=4, help="length of one wrk run")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH (apt-get install wrk)")
    extras = []
    for module, option in (("uvloop", "--loop=uvloop"), ("httptools", "--http=httptools")):
        try:
            __import__(module)
            extras.append(option)
        except ImportError:
            print(f"note: {module} is not installed; uvicorn runs without it (pip install -e '.[bench]')")
    with tempfile.TemporaryDirectory() as tmp:
        store_url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        token = mint(store_url)
        port = free_port()
        env = {**os.environ, "PAT_BENCH_TOKEN": token, "PAT_BENCH_STORE": store_url, "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "uvicorn", "bench.server_app:app", f"--port={port}", *extras]
        command += ["--no-access-log", "--log-level=warning"]
        with server(command, env, port) as pid:
            samples = measure(
                pid, f"http://127.0.0.1:{port}", token, list(LABELS), args.rounds, args.seconds, args.connections
            )
    print(
        f"uvicorn {' '.join(extras) or '(asyncio, h11)'}, wrk -t1 -c{args.connections}, "
        f"{args.rounds} rounds of {args.seconds:g} s per mount (medians)"
    )
    report(samples, LABELS, "bare")


if __name__ == "__main__":
    main()
