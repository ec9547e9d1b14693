"""What the Flask layers cost under a real server: gunicorn (sync worker) + wrk.

Run: ``python bench/server_wsgi.py`` (needs ``wrk``: ``apt-get install wrk``).

One gunicorn process with one sync worker (pinned to core 0) serves
``bench/server_wsgi_app.py``: a bare Flask view, the same behind
Flask-HTTPAuth with a dict lookup, and the same with ``PAT(app)`` and
``@scopes_required`` (a cached token). ``wrk -t1`` pinned to core 1 loads one
mount at a time, in interleaved rounds. Per mount, the medians of req/s (and
its ratio to bare) and of the worker's CPU per request from ``/proc`` (and
what it adds to bare's). Targets (issue 12): PAT >= 0.95 x bare req/s, and
no more CPU added per request than Flask-HTTPAuth's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from server import ROOT, free_port, measure, mint, report, server

LABELS = {
    "bare": "bare Flask",
    "httpauth": "Flask-HTTPAuth (dict lookup)",
    "pat": "PAT(app) + scopes_required, cached token",
}


def worker_pid(master: int, timeout: float = 10.0) -> int:
    """The pid of the master's one worker (whose CPU is the request's cost)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    raise SystemExit("gunicorn started no worker")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=4, help="length of one wrk run")
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        store_url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        token = mint(store_url)
        port = free_port()
        env = {**os.environ, "PAT_BENCH_TOKEN": token, "PAT_BENCH_STORE": store_url, "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "gunicorn", "bench.server_wsgi_app:app", f"--bind=127.0.0.1:{port}"]
        command += ["--workers=1", "--worker-class=sync", "--log-level=warning"]
        with server(command, env, port) as master:
            pid = worker_pid(master)
            base_url = f"http://127.0.0.1:{port}"
            samples = measure(pid, base_url, token, list(LABELS), args.rounds, args.seconds, args.connections)
    print(
        f"gunicorn, 1 sync worker, wrk -t1 -c{args.connections}, "
        f"{args.rounds} rounds of {args.seconds} s per mount (medians)"
    )
    report(samples, LABELS, "bare")


if __name__ == "__main__":
    main()
