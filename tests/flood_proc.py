"""One process of the cross-process flood (tests/test_reliability_load.py).

Run as ``python tests/flood_proc.py '<json>'`` with ``store_url``,
``cache_url``, ``cache_prefix``, ``head`` (a token's prefix and key id),
``first``/``count`` (which forged secrets), ``addresses``, ``failure_limit``
and ``start_at`` (``time.time()`` to begin, so two processes flood together).
It builds its own :class:`PATAuth` (counting argon2 hasher, counted store,
Redis cache), sends every forged token through ``averify`` concurrently, one
client address after another, and prints one JSON line: its counters, the
outcome of each attempt, and ``cache_failures``: how many times the Redis cache
could not answer (an outage, or a call that timed out on a starved machine),
after which this process's own counts decide, as documented.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections import Counter
from typing import Any

from burst_app import build_auth

from pat_middleware import PATAuth
from pat_middleware.cache.redis import RedisCache
from pat_middleware.core.tokens import checksum
from pat_middleware.errors import InvalidToken


def forged(head: str, first: int, count: int) -> list[str]:
    """Tokens with ``head``'s key id, other secrets and valid checksums."""
    bodies = [head + f"{i:032d}" for i in range(first, first + count)]
    return [body + checksum(body) for body in bodies]


async def flood(auth: PATAuth, tokens: list[str], addresses: list[str]) -> Counter[str]:
    async def attempt(i: int, token: str) -> str:
        try:
            await auth.averify(token, client_ip=addresses[i % len(addresses)])
        except InvalidToken as exc:
            return exc.reason
        return "accepted"

    return Counter(await asyncio.gather(*(attempt(i, t) for i, t in enumerate(tokens))))


class _CacheFailures(logging.Handler):
    """Counts the library's log lines that say a Redis cache call failed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(("Redis cache unavailable", "shared cache call")):
            self.count += 1


def main(config: dict[str, Any]) -> dict[str, Any]:
    failures = _CacheFailures()
    logging.getLogger("pat_middleware").addHandler(failures)
    cache = RedisCache(config["cache_url"], prefix=config["cache_prefix"])
    auth, counters = build_auth(config["store_url"], cache=cache, failure_limit=config["failure_limit"])
    try:
        tokens = forged(config["head"], config["first"], config["count"])
        time.sleep(max(0.0, config["start_at"] - time.time()))
        started = time.monotonic()
        outcomes = asyncio.run(flood(auth, tokens, config["addresses"]))
        seconds = time.monotonic() - started
        return {**counters.snapshot(), "outcomes": dict(outcomes), "seconds": seconds, "cache_failures": failures.count}
    finally:
        auth.close()


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
