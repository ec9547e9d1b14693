"""Test helpers: an injectable clock and a fast hasher."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pat_middleware.core.hashing import Argon2Hasher

#: argon2id with tiny parameters: real argon2, fast tests.
FAST_ARGON2 = Argon2Hasher(time_cost=1, memory_cost=8, parallelism=1)


class FakeClock:
    """Epoch seconds that only move when told to."""

    def __init__(self, start: datetime = datetime(2026, 1, 1, tzinfo=UTC)) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, delta: timedelta | float) -> None:
        self.now += delta.total_seconds() if isinstance(delta, timedelta) else delta

    @property
    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)
