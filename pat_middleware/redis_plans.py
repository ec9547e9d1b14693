"""The shared cache's Redis commands: keys, Lua scripts, plans and reply parsers.

Pure: :class:`CachePlans` builds :class:`~pat_middleware.redis_exec.Plan`
objects and sends nothing; :mod:`pat_middleware.redis_cache` runs them
through its executor (sync and asyncio alike). The Lua scripts are
``pat_middleware/lua/cache_*.lua``.

Keys, all under ``prefix`` and with the token id as a hash tag so that one
id's keys share a cluster slot::

    <prefix>{<id>}:e            positive entry (CachedToken bytes), PX ttl
    <prefix>{<id>}:n:<digest>   negative entry: failure reason for one token digest
    <prefix>{<id>}:ni           set of the digests that have negative entries
    <prefix>{<id>}:f:<client>   a client address's failures in the current window (INCR, PX window)
    <prefix>{<id>}:fa           failures from every address in the current window
    <prefix>{<id>}:t            tombstone: set by invalidate, blocks ``store``
    <prefix>{<id>}:u:<ip>       last-used claim (SET NX PX interval)

The tombstone closes a race: a process that read the store just before a
revocation and finishes its cold verification just after it must not put
the stale entry back; ``store`` refuses to write while the tombstone lives
(``tombstone_ttl`` seconds, 5 by default; a verification slower than that
between its store read and its cache write could still refill, for at most
the shared TTL).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pat_middleware.cache import Failure, SharedLookup
from pat_middleware.redis_exec import Plan, lua

__all__ = ["CachePlans"]

_STORE = lua("cache_store")
_FAIL = lua("cache_fail")
_ADMIT = lua("cache_admit")
_REFUND = lua("cache_refund")
_INVALIDATE = lua("cache_invalidate")


def _ms(seconds: float) -> int:
    """Seconds as a Redis PX argument (at least 1 ms)."""
    return max(1, math.ceil(seconds * 1000))


def _none(replies: list[Any]) -> None:
    return None


class CachePlans:
    """Every shared-cache operation as a :class:`~pat_middleware.redis_exec.Plan`.

    Its methods have the signatures of :class:`~pat_middleware.cache.SharedCache`'s,
    so that :class:`~pat_middleware.redis_cache.RedisCache` and its async twin
    are made from them. Pure: builds keys, commands and parsers; sends
    nothing. ``on_lost`` is called with the ids of an invalidation that could
    not be sent, and whether its message was to be published (False for a
    ``forget``); ``written_after(token_id)`` is the Redis server time (ms)
    before which a positive entry for the id counts as absent.
    """

    def __init__(
        self,
        prefix: str,
        channel: str,
        tombstone_ttl: float,
        on_lost: Callable[[list[str], bool], None],
        written_after: Callable[[str], float] = lambda token_id: 0.0,
    ) -> None:
        self.prefix = prefix
        self.channel = channel
        self.tombstone_ms = _ms(tombstone_ttl)
        self._on_lost = on_lost
        self._written_after = written_after

    def key(self, token_id: str, suffix: str) -> str:
        """The key ``<prefix>{<id>}:<suffix>``."""
        return f"{self.prefix}{{{token_id}}}:{suffix}"

    def _failures_key(self, token_id: str, client: str | None) -> str:
        return self.key(token_id, "f" if client is None else "f:" + client)

    def lookup(self, token_id: str, digest: bytes, client: str | None = None) -> Plan[SharedLookup]:
        """Positive entry, negative reason for ``digest``, ``client``'s and every
        address's failure counts: one MGET. A positive entry written before
        ``written_after(token_id)`` (Redis server time, ms) counts as absent."""
        prefix = f"{self.prefix}{{{token_id}}}:"
        command = (
            "MGET",
            prefix + "e",
            prefix + "n:" + digest.hex(),
            prefix + ("f" if client is None else "f:" + client),
            prefix + "fa",
        )
        written_after = self._written_after(token_id)
        return Plan((command,), lambda replies: _parse_lookup(replies, written_after))

    def store(self, token_id: str, entry: bytes, ttl: float) -> Plan[None]:
        """Write a positive entry unless the id carries a tombstone."""
        keys = (self.key(token_id, "e"), self.key(token_id, "t"))
        return Plan((_STORE.call(keys, (entry, _ms(ttl))),), _none, (_STORE,))

    def fail(self, failure: Failure) -> Plan[int]:
        """Negative entry for the digest (skipped under a tombstone) and, with ``count``,
        INCR of the client's and every address's failures."""
        token_id, hexdigest = failure.token_id, failure.digest.hex()
        keys = (
            self.key(token_id, "n:" + hexdigest),
            self.key(token_id, "ni"),
            self._failures_key(token_id, failure.client),
            self.key(token_id, "t"),
            self.key(token_id, "fa"),
        )
        counted = "1" if failure.count else "0"
        command = _FAIL.call(keys, (failure.reason, _ms(failure.ttl), _ms(failure.window), hexdigest, counted))
        return Plan((command,), lambda replies: int(replies[0]), (_FAIL,))

    def admit(self, token_id: str, client: str | None, window: float) -> Plan[tuple[int, int]]:
        """INCR ``client``'s and every address's failures for a run about to start; the counts after."""
        keys = (self._failures_key(token_id, client), self.key(token_id, "fa"))
        return Plan((_ADMIT.call(keys, (_ms(window),)),), lambda r: (int(r[0][0]), int(r[0][1])), (_ADMIT,))

    def refund(self, token_id: str, client: str | None) -> Plan[None]:
        """Undo :meth:`admit` (the secret matched)."""
        keys = (self._failures_key(token_id, client), self.key(token_id, "fa"))
        return Plan((_REFUND.call(keys, ()),), _none, (_REFUND,))

    def invalidate(self, token_ids: list[str]) -> Plan[None]:
        """Delete the ids' entries, leave tombstones, then PUBLISH the ids (nothing for no ids)."""
        return self._delete(token_ids, True)

    def forget(self, token_ids: list[str]) -> Plan[None]:
        """:meth:`invalidate` without the PUBLISH (the change feed's delete)."""
        return self._delete(token_ids, False)

    def _delete(self, token_ids: list[str], publish: bool) -> Plan[None]:
        if not token_ids:
            return Plan((), _none)
        ids = list(dict.fromkeys(token_ids))
        commands = [
            _INVALIDATE.call(
                (self.key(i, "e"), self.key(i, "ni"), self.key(i, "t")),
                (self.key(i, "n:"), self.tombstone_ms),
            )
            for i in ids
        ]
        lost = lambda: self._on_lost(ids, publish)  # noqa: E731
        if not publish:
            return Plan(tuple(commands), _none, (_INVALIDATE,), lost)
        message = ("PUBLISH", self.channel, ",".join(ids))
        return Plan(tuple(commands), _none, (_INVALIDATE,), lost, (message,))

    def claim_touch(self, token_id: str, ip: str | None, interval: float) -> Plan[bool]:
        """``SET NX PX``: True for the one caller per token and ip per interval."""
        key = self.key(token_id, "u:" + (ip or "-"))
        return Plan((("SET", key, "1", "NX", "PX", _ms(interval)),), lambda r: bool(r[0]))


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


def _parse_lookup(replies: list[Any], written_after: float) -> SharedLookup:
    entry, negative, failures, failures_all = replies[0]
    return SharedLookup(_parse_entry(entry, written_after), _text(negative), int(failures or 0), int(failures_all or 0))


def _parse_entry(stored: bytes | None, written_after: float) -> bytes | None:
    """The entry in ``b"<ms>|<entry>"``, or None if missing or written before
    ``written_after`` (an unstamped entry counts as written at 0)."""
    if not stored:
        return None
    stamp, bar, entry = stored.partition(b"|")
    if not bar or not stamp.isdigit():
        stamp, entry = b"0", stored
    return entry if int(stamp) >= written_after else None
