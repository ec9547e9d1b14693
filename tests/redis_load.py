"""Verification load for the Sentinel and Cluster failure tests.

:class:`Load` runs one thread per :class:`PATAuth` that verifies a fixed
list of tokens in turn, recording each outcome with the moment the call
started; :class:`Prober` calls the shared cache directly every few
milliseconds and records when it answered and when it did not. The tests
then judge the records: every valid token accepted, no exception other than
the documented ones, no revoked token accepted after its bound.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from pat_middleware import PATAuth
from pat_middleware.cache.local import CacheUnavailable
from pat_middleware.errors import InvalidToken, StoreUnavailable

__all__ = ["Load", "Outcome", "Prober", "outcome"]

#: Longest a load thread or a prober runs, whatever the test does.
MAX_SECONDS = 90.0


@dataclass(frozen=True, slots=True)
class Outcome:
    auth: str
    token: str
    started: float  # time.monotonic() when the verify call started
    kind: str  # ok / invalid / unavailable / error
    detail: str


def outcome(auth: PATAuth, token: str) -> tuple[str, str]:
    """``("ok", token id)``, ``("invalid", reason)``, ``("unavailable", "")`` or ``("error", what)``."""
    try:
        return "ok", auth.verify(token).token_id
    except InvalidToken as exc:
        return "invalid", exc.reason
    except StoreUnavailable:
        return "unavailable", ""
    except Exception as exc:  # anything else is a defect the tests report
        return "error", f"{type(exc).__name__}: {exc}"


class Load:
    """Verify ``tokens`` in turn through each of ``auths`` (one thread each) until stopped."""

    def __init__(self, auths: dict[str, PATAuth], tokens: Iterable[str], pause: float = 0.0005) -> None:
        self.auths = auths
        self.tokens = list(tokens)
        self.pause = pause
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(name, auth), name=f"load-{name}", daemon=True)
            for name, auth in auths.items()
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _run(self, name: str, auth: PATAuth) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        while not self._stop.is_set() and time.monotonic() < deadline:
            for token in self.tokens:
                started = time.monotonic()
                kind, detail = outcome(auth, token)
                with self._lock:
                    self.outcomes.append(Outcome(name, token, started, kind, detail))
                time.sleep(self.pause)  # a request's own I/O: leaves the GIL to the others

    def of(self, token: str, auth: str | None = None) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.token == token and (auth is None or o.auth == auth)]


class Prober:
    """Calls ``auth.cache.lookup`` every ``interval`` seconds and records
    ``(time, answered)``: what the cache itself sees of Redis."""

    def __init__(self, auth: PATAuth, interval: float = 0.005) -> None:
        assert auth.cache is not None
        self.cache = auth.cache
        self.interval = interval
        self.samples: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cache-prober", daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        while not self._stop.is_set() and time.monotonic() < deadline:
            now = time.monotonic()
            try:
                self.cache.lookup("PROBE0000000", b"\0" * 32)
                answered = True
            except CacheUnavailable:
                answered = False
            self.samples.append((now, answered))
            self._stop.wait(self.interval)

    def recovered(self, since: float) -> bool:
        """True once the cache failed after ``since`` and then answered again."""
        window = self.window(since)
        return window is not None and window[1] != float("inf")

    def window(self, since: float) -> tuple[float, float] | None:
        """From ``since``: (first unanswered sample, first answered sample after it), or None."""
        down = next((t for t, ok in self.samples if t >= since and not ok), None)
        if down is None:
            return None
        up = next((t for t, ok in self.samples if t > down and ok), None)
        return (down, up) if up is not None else (down, float("inf"))
