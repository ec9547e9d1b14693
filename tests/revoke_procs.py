"""The child process of ``tests/test_reliability_revoke.py``: rotates and revokes
tokens in a loop until it is killed.

Run as ``python tests/revoke_procs.py SPEC`` (``SPEC``: the JSON of a store
spec, see :func:`open_store`). It prints ``ready`` once its store is open,
then the number of each finished loop: a token created (for a user of
its own, :func:`loop_user`), rotated one to three times with an hour of
grace (so every predecessor is in its grace period), then its newest token
revoked. It never exits on its own; the test kills it
with SIGKILL at a random moment, which may fall inside any store write.
"""

from __future__ import annotations

import json
import random
import sys
from datetime import timedelta
from typing import Any

from pat_middleware import PATAuth
from pat_middleware.core.hashing import HMACHasher
from pat_middleware.stores import Store

__all__ = ["GRACE", "HASHER", "loop_user", "open_store", "work"]

#: HMAC, not argon2: the loop should spend its time in store writes.
HASHER = HMACHasher(b"pat-middleware reliability test key")
GRACE = timedelta(hours=1)


def open_store(spec: dict[str, Any]) -> Store:
    """The store a spec names: ``{"kind": "sqlite", "path": ...}``,
    ``{"kind": "postgres", "url": ..., "table": ...}`` or
    ``{"kind": "redis", "url": ..., "prefix": ...}``."""
    kind = spec["kind"]
    if kind == "sqlite":
        from pat_middleware.stores.sqlite import SQLiteStore

        return SQLiteStore(spec["path"], timeout=30)
    if kind == "postgres":
        from pat_middleware.stores.sqlalchemy import SQLAlchemyStore

        return SQLAlchemyStore(spec["url"], table_name=spec["table"])
    if kind == "redis":
        from pat_middleware.stores.redis import RedisStore

        return RedisStore.from_url(spec["url"], prefix=spec["prefix"])
    raise ValueError(f"unknown store kind {kind!r}")


def work(spec: dict[str, Any]) -> None:
    """The endless loop (see the module doc)."""
    auth = PATAuth(open_store(spec), hasher=HASHER)
    rng = random.Random()
    auth.manager.list(loop_user(spec, 0))  # connected, schema checked
    print("ready", flush=True)
    n = 0
    while True:
        token = auth.manager.create(loop_user(spec, n), "ci")
        for _ in range(rng.randint(1, 3)):
            token = auth.manager.rotate(token.record.id, grace=GRACE)
        auth.manager.revoke(token.record.id)
        n += 1
        print(n, flush=True)


def loop_user(spec: dict[str, Any], n: int) -> str:
    """The user of loop ``n``: one per loop, so no listing grows with the run."""
    return f"{spec['user']}-{n}"


if __name__ == "__main__":
    work(json.loads(sys.argv[1]))
