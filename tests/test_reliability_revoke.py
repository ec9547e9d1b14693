"""Reliability: revoking a rotated token survives kill -9, on every durable store.

A child process (``tests/revoke_procs.py``, a separate OS process with its own
store connection) creates tokens, rotates each one to three times with an
hour of grace and revokes the newest, in a loop. The test kills it with
SIGKILL at a random moment, which can fall between or inside any store write,
then opens the store itself and checks the invariant: **no token whose
successor is revoked is still live or in its grace period**. A revoke that
wrote the successor and its predecessors separately broke it; one atomic
operation (transaction, Lua script) cannot.

Kill rounds are bounded in number and time (well under a minute per store);
the seed of the kill delays is printed with the run's figures (``-s``).
"""

from __future__ import annotations

import json
import os
import random
import select
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from revoke_procs import loop_user, open_store

from pat_middleware.core.models import TokenRecord
from pat_middleware.stores.sqlalchemy import SQLAlchemyStore

pytestmark = pytest.mark.slow

CHILD = Path(__file__).with_name("revoke_procs.py")
ROUNDS = 20
TIME_BUDGET = 30.0  # seconds of kill rounds per store
#: How long after "ready" the child is killed (seconds): from inside its first loop to dozens in.
KILL_AFTER = (0.02, 0.4)


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A store spec for the child and the test: a fresh file, table or key prefix."""
    kind: str = request.param
    if kind == "sqlite":
        yield {"kind": kind, "path": str(tmp_path / "tokens.db")}
    elif kind == "postgres":
        url = request.getfixturevalue("sqlalchemy_postgres_url")
        spec = {"kind": kind, "url": url, "table": f"pat_reliability_{uuid.uuid4().hex[:8]}"}
        store = SQLAlchemyStore(url, table_name=spec["table"])
        store.create_schema()
        yield spec
        store.drop_schema()
        store.close()
    else:
        yield {
            "kind": kind,
            "url": request.getfixturevalue("redis_url"),
            "prefix": request.getfixturevalue("redis_prefix"),
        }


def _start(spec: dict[str, Any], stderr: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _wait_ready(child: subprocess.Popen[str], errors: Path) -> None:
    assert child.stdout is not None
    readable, _, _ = select.select([child.stdout], [], [], 30)
    line = child.stdout.readline() if readable else ""
    assert line.strip() == "ready", f"the child did not start: {line!r}\n{errors.read_text()}"


def _broken_predecessors(records: list[TokenRecord], now: datetime) -> list[tuple[str, str]]:
    """``(predecessor, successor)`` pairs where the successor is revoked at ``now``
    and a predecessor (followed through ``rotated_from``) is not."""
    by_id = {r.id: r for r in records}
    broken = []
    for record in records:
        if record.revoked_at is None or record.revoked_at > now:
            continue
        seen = {record.id}
        older = by_id.get(record.rotated_from or "")
        while older is not None and older.id not in seen:
            seen.add(older.id)
            if older.revoked_at is None or older.revoked_at > now:
                broken.append((older.id, record.id))
            older = by_id.get(older.rotated_from or "")
    return broken


def test_kill_9_never_leaves_a_predecessor_of_a_revoked_token_live(spec: dict[str, Any], tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    print(f"\n{spec['kind']}: seed {seed}")
    errors = tmp_path / "child-stderr.txt"
    deadline = time.monotonic() + TIME_BUDGET
    rounds = loops = mid_chain = 0
    with errors.open("w") as stderr:
        while rounds < ROUNDS and time.monotonic() < deadline:
            round_spec = {**spec, "user": f"reliability-{rounds}"}
            child = _start(round_spec, stderr)
            try:
                _wait_ready(child, errors)
                time.sleep(rng.uniform(*KILL_AFTER))
                assert child.poll() is None, f"the child exited on its own:\n{errors.read_text()}"
                child.kill()  # SIGKILL: no cleanup, no rollback from the child's side
            finally:
                child.kill()
                out, _ = child.communicate(timeout=30)
            assert child.returncode == -9
            rounds += 1
            finished = len(out.split())  # loops 0..finished-1 returned from revoke
            loops += finished

            # Another process (this one) opens the store after the crash and checks the
            # loops the kill may have cut short: the one it printed last, the next (in
            # progress, or done but not yet printed) and the one after (not begun).
            store = open_store(spec)
            try:
                checked = range(max(finished - 1, 0), finished + 2)
                records = [r for n in checked for r in store.list_user(loop_user(round_spec, n))]
            finally:
                store.close()
            now = datetime.now(UTC)
            broken = _broken_predecessors(records, now)
            assert broken == [], f"round {rounds} (seed {seed}): predecessors still live or in grace: {broken}"
            mid_chain += any(r.revoked_at is None for r in records)  # a chain the kill cut short
    print(f"{rounds} kills, {loops} loops finished, {mid_chain} kills left a chain unfinished")
    assert rounds >= 5, "too few kill rounds in the time budget"
    assert loops >= rounds, "the child barely ran between kills"
