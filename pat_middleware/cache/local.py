"""Verification caches: the in-process cache and the shared-cache protocol.

The in-process cache maps a key id to a :class:`CachedToken`: the SHA-256
digest of the full token (never the plaintext), the principal, the expiry
and the store's verifier string (to revalidate a stale entry without
argon2). A hit is one dict lookup; nothing here does I/O.

The shared cache (Redis, :mod:`pat_middleware.cache.redis`) is reached only
through :class:`SharedCache` / :class:`AsyncSharedCache`, whose calls the
sans-IO core yields and the drivers perform.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pat_middleware.core.models import Principal, TokenRecord, from_timestamp

__all__ = [
    "AsyncSharedCache",
    "CacheUnavailable",
    "CachedToken",
    "Failure",
    "LocalCache",
    "SharedCache",
    "SharedLookup",
    "TrustedAddresses",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class CacheUnavailable(Exception):
    """Raised by a shared cache that cannot answer; the core falls back to the store."""


logger = logging.getLogger("pat_middleware")
_decode_json = json.JSONDecoder().decode


@dataclass(frozen=True, slots=True)
class CachedToken:
    """A verified token as the caches keep it. Holds no secret.

    ``digest`` is SHA-256 of the full token; ``verifier`` the store's hash
    string (a stale entry whose record still has this verifier needs no new
    argon2 run); ``expires_at``/``revokes_at`` are epoch seconds or None.
    """

    principal: Principal
    digest: bytes
    verifier: str
    expires_at: float | None
    revokes_at: float | None
    networks: tuple[IPNetwork, ...]
    #: Until when (epoch seconds) neither expiry nor a scheduled revocation stops
    #: the token; derived, for the hot path.
    valid_until: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ends = [t for t in (self.expires_at, self.revokes_at) if t is not None]
        object.__setattr__(self, "valid_until", min(ends, default=math.inf))

    @property
    def token_id(self) -> str:
        return self.principal.token_id

    def to_bytes(self) -> bytes:
        """Serialize for the shared cache: a compact JSON array.

        Version 1 for a token valid for every resource (what every release
        reads); version 2, with the resource ids as an 11th field, for a token
        limited to resources: a process of an older release reads version 2 as
        unknown and goes to the store, so it can never take a restricted token
        for an unrestricted one.
        """
        p = self.principal
        fields: list[Any] = [
            1 if p.resources is None else 2,
            p.user_id,
            p.token_id,
            p.token_name,
            sorted(p.scopes),
            self.digest.hex(),
            self.verifier,
            self.expires_at,
            self.revokes_at,
            [str(n) for n in self.networks],
        ]
        if p.resources is not None:
            fields.append(sorted(p.resources))
        return json.dumps(fields, separators=(",", ":")).encode()

    @classmethod
    def for_record(cls, record: TokenRecord, digest: bytes, scopes: frozenset[str]) -> CachedToken:
        """The entry for a verified ``record`` whose effective scopes are ``scopes``."""
        principal = Principal(
            user_id=record.user_id,
            token_id=record.id,
            token_name=record.name,
            scopes=scopes,
            expires_at=record.expires_at,
            resources=frozenset(record.resources) if record.resources is not None else None,
        )
        return cls(
            principal=principal,
            digest=digest,
            verifier=record.hash,
            expires_at=record.expires_at.timestamp() if record.expires_at else None,
            revokes_at=record.revoked_at.timestamp() if record.revoked_at else None,
            networks=networks_of(record),
        )

    @classmethod
    def from_shared(cls, data: bytes | None) -> CachedToken | None:
        """The entry the shared cache holds, or ``None`` (none, or corrupt: logged and ignored)."""
        if data is None:
            return None
        try:
            return cls.from_bytes(data)
        except ValueError:
            logger.warning("ignoring a corrupt shared cache entry")
            return None

    @classmethod
    def from_bytes(cls, data: bytes) -> CachedToken:
        """Inverse of :meth:`to_bytes`; raises ValueError on anything else."""
        try:
            fields = _decode_json(data.decode())
            version, user_id, token_id, name, scopes, digest, verifier, expires_at, revokes_at, cidrs = fields[:10]
            if (version, len(fields)) not in ((1, 10), (2, 11)):
                raise ValueError(f"unknown entry version {version!r}")
            resources = fields[10] if version == 2 else None
            if not (
                type(user_id) is str
                and type(token_id) is str
                and type(name) is str
                and type(verifier) is str
                and all(type(v) is str for v in scopes)
                and (resources is None or (type(resources) is list and all(type(v) is str for v in resources)))
            ):
                raise ValueError("entry fields have the wrong types")
            return cls(
                principal=Principal(
                    user_id=user_id,
                    token_id=token_id,
                    token_name=name,
                    scopes=frozenset(scopes),
                    expires_at=from_timestamp(expires_at) if expires_at is not None else None,
                    resources=frozenset(resources) if resources is not None else None,
                ),
                digest=bytes.fromhex(digest),
                verifier=verifier,
                expires_at=expires_at,
                revokes_at=revokes_at,
                networks=tuple(ipaddress.ip_network(c) for c in cidrs) if cidrs else (),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError("corrupt shared cache entry") from exc


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed cold verification as the shared cache records it: the reason for
    this exact token (``digest``) for ``ttl`` seconds, and (unless not ``count``:
    :meth:`SharedCache.admit` counted it already) one more failure of ``client``
    and of the key id in the current ``window``."""

    token_id: str
    digest: bytes
    reason: str
    ttl: float
    window: float
    client: str | None = None
    count: bool = True


@dataclass(frozen=True, slots=True)
class SharedLookup:
    """One shared-cache round trip for a key id: the positive entry (if any),
    the negative reason recorded for this exact token digest (if any), and
    the recent failure counts on the key id (the client's, everyone's)."""

    entry: bytes | None
    negative: str | None
    failures: int
    #: Failures on the key id from every address (and process) in the window.
    failures_all: int = 0


class SharedCache(Protocol):
    """Synchronous shared cache; every method may raise :class:`CacheUnavailable`."""

    @property
    def subscribed(self) -> bool:
        """True while invalidation messages are being received."""

    def listen(self, on_invalidate: Callable[[list[str]], None], on_reconnect: Callable[[], None]) -> None:
        """Start (once, lazily) the invalidation listener; never blocks, never raises."""

    def lookup(self, token_id: str, digest: bytes, client: str | None = None) -> SharedLookup:
        """Positive entry, negative reason for ``digest``, failures of ``client`` on the id."""

    def store(self, token_id: str, entry: bytes, ttl: float) -> None:
        """Write a positive entry unless the id was invalidated moments ago (tombstone)."""

    def fail(self, failure: Failure) -> int:
        """Record a failed verification: a negative entry for its digest and (with
        ``failure.count``) one more failure for its client and for the id across
        all addresses; return the client's failure count on the id in the window."""

    def admit(self, token_id: str, client: str | None, window: float) -> tuple[int, int]:
        """Count an argon2 run about to start as a failure until refunded; return the
        counts after it: ``client``'s on the id, and every address's."""

    def refund(self, token_id: str, client: str | None) -> None:
        """Take back what :meth:`admit` counted (the secret matched)."""

    def invalidate(self, token_ids: list[str]) -> None:
        """Delete entries, leave tombstones and publish the ids on the channel."""

    def forget(self, token_ids: list[str]) -> None:
        """Delete entries and leave tombstones, without publishing (the revocation feed)."""

    def claim_touch(self, token_id: str, ip: str | None, interval: float) -> bool:
        """True for exactly one caller per token and ip per interval, across processes."""

    def close(self) -> None: ...


class AsyncSharedCache(Protocol):
    """The asynchronous twin of :class:`SharedCache` (same names, same meaning)."""

    async def lookup(self, token_id: str, digest: bytes, client: str | None = None) -> SharedLookup: ...
    async def store(self, token_id: str, entry: bytes, ttl: float) -> None: ...
    async def fail(self, failure: Failure) -> int: ...
    async def admit(self, token_id: str, client: str | None, window: float) -> tuple[int, int]: ...
    async def refund(self, token_id: str, client: str | None) -> None: ...
    async def invalidate(self, token_ids: list[str]) -> None: ...
    async def forget(self, token_ids: list[str]) -> None: ...
    async def claim_touch(self, token_id: str, ip: str | None, interval: float) -> bool: ...
    async def close(self) -> None: ...


class LocalCache:
    """Bounded in-process cache of verified tokens, failures and touch debouncing.

    Reads are lock-free dict lookups; writes take a lock. Every invalidation
    bumps a generation counter so that a cold verification which started
    before a revocation cannot refill the cache with what it read before it
    (see :meth:`generation` and :meth:`put`).
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: dict[str, tuple[CachedToken, float]] = {}
        self._negative: dict[tuple[str, bytes], tuple[str, float]] = {}
        self._failures: dict[tuple[str, str | None], tuple[int, float]] = {}
        self._touched: dict[tuple[str, str | None], float] = {}
        self._id_failures: dict[str, tuple[int, float]] = {}
        self._attempts: dict[tuple[str, str | None], dict[bytes, int]] = {}
        self._id_attempts: dict[str, dict[bytes, int]] = {}
        self._trusted: dict[str, TrustedAddresses] = {}
        self._invalidated: dict[str, int] = {}
        self._generation = 0
        self._flushed = 0
        self._lock = threading.Lock()

    # -- positive entries -------------------------------------------------
    def __len__(self) -> int:
        """How many tokens are cached."""
        return len(self._entries)

    def get(self, token_id: str) -> tuple[CachedToken, float] | None:
        """``(entry, fresh_until)`` or None. Lock-free."""
        return self._entries.get(token_id)

    @property
    def generation(self) -> int:
        """The invalidation counter; capture it before reading the store."""
        return self._generation

    def put(self, entry: CachedToken, fresh_until: float, since_generation: int) -> bool:
        """Cache ``entry`` unless its id was invalidated after ``since_generation``."""
        with self._lock:
            if self._invalidated.get(entry.token_id, -1) > since_generation:
                return False
            if since_generation < self._flushed:
                fresh_until = 0.0  # read before a flush: keep it, but revalidate on use
            self._evict(self._entries)
            self._entries[entry.token_id] = (entry, fresh_until)
            return True

    def invalidate(self, token_ids: Iterable[str]) -> None:
        """Drop everything known about these ids (positive, negative, touch)."""
        with self._lock:
            self._generation += 1
            self._evict(self._invalidated)
            for token_id in token_ids:
                self._entries.pop(token_id, None)
                self._invalidated[token_id] = self._generation
                for key in [k for k in self._negative if k[0] == token_id]:
                    del self._negative[key]

    def clear(self) -> None:
        """Forget every entry, positive and negative."""
        with self._lock:
            self._generation += 1
            self._flushed = self._generation
            self._entries.clear()
            self._negative.clear()

    def expire_all(self) -> None:
        """Mark every positive entry stale and forget failures (the invalidation
        channel was lost: messages may have been missed).

        A stale entry is revalidated against the store on its next use; if the
        record still has the same verifier no argon2 runs, so an outage of the
        channel costs one store read per token, not one hash.
        """
        with self._lock:
            self._generation += 1
            self._flushed = self._generation
            for token_id, (entry, _) in list(self._entries.items()):
                self._entries[token_id] = (entry, 0.0)
            self._negative.clear()

    # -- failures ---------------------------------------------------------
    def negative(self, token_id: str, digest: bytes, now: float) -> str | None:
        """The recorded failure reason for this exact token, if still fresh."""
        hit = self._negative.get((token_id, digest))
        if hit is None or hit[1] <= now:
            return None
        return hit[0]

    def fail(
        self, token_id: str, digest: bytes, reason: str, now: float, ttl: float, window: float, client: str | None
    ) -> int:
        """Record a failure (for ``client`` and for the id across all addresses);
        return ``client``'s failure count on the id in the window."""
        with self._lock:
            self._evict(self._negative)
            self._negative[(token_id, digest)] = (reason, now + ttl)
            self._count_failure(self._id_failures, token_id, now, window)
            return self._count_failure(self._failures, (token_id, client), now, window)

    def _count_failure(self, table: dict[Any, tuple[int, float]], key: Any, now: float, window: float) -> int:
        # Called with the lock held.
        count, started = table.get(key, (0, now))
        if now - started >= window:
            count, started = 0, now
        self._evict(table)
        table[key] = (count + 1, started)
        return count + 1

    def failures(self, token_id: str, client: str | None, now: float, window: float) -> tuple[int, int]:
        """Failures on the id in the current window: ``client``'s, and all addresses'."""
        count, started = self._failures.get((token_id, client), (0, now))
        total, total_started = self._id_failures.get(token_id, (0, now))
        return (count if now - started < window else 0), (total if now - total_started < window else 0)

    def begin_attempt(self, token_id: str, client: str | None, digest: bytes) -> tuple[int, int]:
        """Register a cold verification of the token with ``digest``; return how many
        *other* secrets for the id are being verified right now: from ``client``,
        and from every address. Every call must be paired with :meth:`end_attempt`."""
        with self._lock:
            return (
                _add_attempt(self._attempts.setdefault((token_id, client), {}), digest),
                _add_attempt(self._id_attempts.setdefault(token_id, {}), digest),
            )

    def end_attempt(self, token_id: str, client: str | None, digest: bytes) -> None:
        """The verification registered by :meth:`begin_attempt` is over."""
        with self._lock:
            _end_attempt(self._attempts, (token_id, client), digest)
            _end_attempt(self._id_attempts, token_id, digest)

    # -- the owner's addresses during a flood -----------------------------
    def trusted(self, token_id: str, now: float) -> TrustedAddresses | None:
        """The addresses remembered for the id (see :meth:`trust`), if still fresh."""
        hit = self._trusted.get(token_id)
        return hit if hit is not None and now < hit.until else None

    def trust(self, token_id: str, trusted: TrustedAddresses) -> None:
        """Remember which addresses keep their own budget while the id is flooded."""
        with self._lock:
            self._evict(self._trusted)
            self._trusted[token_id] = trusted

    # -- last-used debouncing ----------------------------------------------
    def touch_due(self, token_id: str, ip: str | None, now: float, interval: float) -> bool:
        """True at most once per token and ip per ``interval`` in this process."""
        key = (token_id, ip)
        if self._touched.get(key, 0.0) > now:
            return False
        with self._lock:
            if self._touched.get(key, 0.0) > now:
                return False
            self._evict(self._touched)
            self._touched[key] = now + interval
            return True

    def _evict(self, table: dict[Any, Any]) -> None:
        # Called with the lock held: drop the oldest entries beyond the bound.
        while len(table) >= self.max_entries:
            del table[next(iter(table))]


def _add_attempt(digests: dict[bytes, int], digest: bytes) -> int:
    """Count one more attempt with ``digest``; return how many other digests are in flight."""
    digests[digest] = digests.get(digest, 0) + 1
    return len(digests) - 1


def _end_attempt(table: dict[Any, dict[bytes, int]], key: Any, digest: bytes) -> None:
    digests = table.get(key, {})
    left = digests.get(digest, 0) - 1
    if left > 0:
        digests[digest] = left
    else:
        digests.pop(digest, None)
    if not digests:
        table.pop(key, None)


@dataclass(frozen=True, slots=True)
class TrustedAddresses:
    """Addresses that keep their own failure budget while a key id is flooded:
    the token's recent ``last_used_ips``, remembered until ``until``."""

    ips: frozenset[str]
    until: float

    def __contains__(self, client: object) -> bool:
        return client in self.ips


def address_in(client: str, networks: tuple[IPNetwork, ...]) -> bool:
    """True if ``client`` (an IP address, IPv4-mapped IPv6 included) is in one of ``networks``."""
    try:
        address = ipaddress.ip_address(client.strip("[]"))
    except ValueError:
        return False
    forms = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        forms.append(address.ipv4_mapped)  # "::ffff:10.1.2.3" is 10.1.2.3 (a dual-stack socket)
    return any(form in net for net in networks for form in forms)


def networks_of(record: TokenRecord) -> tuple[IPNetwork, ...]:
    """The record's allowed networks, parsed."""
    return tuple(ipaddress.ip_network(c, strict=False) for c in record.allowed_cidrs)
