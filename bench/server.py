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

Time on a shared virtual machine moves by +-20% between runs. ``--instructions N``
measures what does not move: the same uvicorn process runs under valgrind's
callgrind (``apt-get install valgrind``) with counting off; per mount, counting is
switched on for ``N`` keep-alive requests sent one after another, and the
instructions the server executed are divided by ``N``. The same code gives the
same count (to ~0.1%) whatever else the machine does; instructions are not
seconds (cache misses are not counted), but a CPU-bound server's req/s follows them.
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
def server(command: list[str], env: dict[str, str], port: int, timeout: float = 20.0) -> Iterator[int]:
    """Start the server, yield its pid, stop it."""
    proc = subprocess.Popen(pinned(0, command), env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_up(port, timeout)
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


def send_requests(port: int, path: str, token: str, count: int) -> None:
    """``count`` keep-alive GETs, one at a time, on one connection (each must answer 200 ok)."""
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for _ in range(count):
            sock.sendall(request)
            reply = b""
            while not reply.endswith(b"\r\n\r\nok"):
                chunk = sock.recv(65536)
                if not chunk or (len(reply) >= 12 and not reply.startswith(b"HTTP/1.1 200")):
                    raise SystemExit(f"{path}: unexpected answer {reply[:200]!r}")
                reply += chunk


def callgrind_control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def count_instructions(
    pid: int, port: int, token: str, mounts: list[str], rounds: int, count: int, out_dir: Path
) -> dict[str, list[float]]:
    """Per mount, per round: instructions the server executed per request."""
    samples: dict[str, list[float]] = {m: [] for m in mounts}
    for mount in mounts:  # warm up: the cold verification, caches, code paths
        send_requests(port, f"/{mount}", token, 200)
    for _ in range(rounds):
        order = mounts[:]
        random.shuffle(order)
        for mount in order:
            callgrind_control(pid, "--instr=on")
            callgrind_control(pid, "--zero")
            send_requests(port, f"/{mount}", token, count)
            callgrind_control(pid, f"--dump={mount}")
            callgrind_control(pid, "--instr=off")
            dump = max(out_dir.glob(f"cg.{pid}.*"), key=lambda p: p.stat().st_mtime_ns)
            totals = re.search(r"^(?:summary|totals): ([0-9]+)", dump.read_text(errors="replace"), re.MULTILINE)
            if totals is None:
                raise SystemExit(f"no totals in {dump}")
            samples[mount].append(int(totals.group(1)) / count)
            dump.unlink()
    return samples


def report_instructions(samples: dict[str, list[float]], labels: dict[str, str], bare: str) -> None:
    base = statistics.median(samples[bare])
    width = max(len(v) for v in labels.values()) + 2
    print(f"{'mount':{width}} {'instr/req':>10} {'added':>8} {'bare/this':>10} {'spread':>7}")
    for mount, label in labels.items():
        values = samples[mount]
        median = statistics.median(values)
        spread = (max(values) - min(values)) / median
        print(f"{label:{width}} {median:10.0f} {median - base:+8.0f} {base / median:10.3f} {spread:7.2%}")


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
    parser.add_argument(
        "--instructions",
        type=int,
        metavar="N",
        help="count the server's instructions per request under callgrind (N requests per mount and round) "
        "instead of timing wrk runs",
    )
    args = parser.parse_args()
    if args.instructions:
        for tool in ("valgrind", "callgrind_control"):
            if shutil.which(tool) is None:
                raise SystemExit(f"{tool} is not on PATH (apt-get install valgrind)")
    elif shutil.which("wrk") is None:
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
        if args.instructions:
            valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={tmp}/cg.%p"]
            with server([*valgrind, *command], env, port, timeout=120) as pid:
                counts = count_instructions(pid, port, token, list(LABELS), args.rounds, args.instructions, Path(tmp))
            print(
                f"uvicorn {' '.join(extras) or '(asyncio, h11)'} under callgrind, {args.rounds} rounds of "
                f"{args.instructions} keep-alive requests per mount (medians; spread = (max-min)/median)"
            )
            report_instructions(counts, LABELS, "bare")
            return
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
