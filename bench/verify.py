"""How much a verification costs: cached vs a bare SHA-256 vs cold (argon2).

Run: ``python bench/verify.py``. All figures come from one run, interleaved:
each round times every case once; the median of the rounds is printed, with
the ratio to ``hashlib.sha256`` of the token.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Callable
from datetime import timedelta

from report import print_ratios

from pat_middleware import MemoryStore, PATAuth


def per_call_us(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--hot", type=int, default=20000, help="calls per round for the fast cases")
    parser.add_argument("--cold", type=int, default=10, help="calls per round for cold verification")
    args = parser.parse_args()

    auth = PATAuth(MemoryStore())
    token = auth.manager.create("bench", "bench", ["repo:read"], expires_in=timedelta(days=1)).token
    auth.verify(token)  # warm the local cache
    encoded = token.encode()

    def cold() -> object:
        auth.verifier.local.clear()  # forget the verified digest: store read + argon2 again
        return auth.verify(token)

    cases: dict[str, tuple[Callable[[], object], int]] = {
        "hashlib.sha256(token)": (lambda: hashlib.sha256(encoded).digest(), args.hot),
        "auth.verify (cached)": (lambda: auth.verify(token), args.hot),
        "auth.verify (cold, argon2id)": (cold, args.cold),
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, (fn, n) in cases.items():
            samples[name].append(per_call_us(fn, n))
    auth.close()

    print_ratios(samples, "hashlib.sha256(token)", label="case", unit="µs/call", ratio="x sha256")


if __name__ == "__main__":
    main()
