"""The verification rules: the cached hot path and the cold verification flow.

``Verifier.cached``/``cached_header``/``cached_bearer`` are the hot path (no
I/O: one dict lookup, one SHA-256, one constant-time compare).
``Verifier.verify_flow`` is everything else, written as a flow
(:mod:`pat_middleware.core.flow`) that the drivers run sync or async.
"""

from __future__ import annotations

import hmac
import logging
import math
import os
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Concatenate, ParamSpec, TypeVar

from pat_middleware.cache.local import (
    CachedToken,
    CacheUnavailable,
    Failure,
    LocalCache,
    SharedCache,
    TrustedAddresses,
    address_in,
    networks_of,
)
from pat_middleware.core import defaults, limits
from pat_middleware.core.events import Event, EventHook, emit
from pat_middleware.core.flow import NO_KEYWORDS, Call, Flow, perform
from pat_middleware.core.hashing import Hasher
from pat_middleware.core.health import OutageLog, VerifierCounts
from pat_middleware.core.models import Principal, TokenRecord, from_timestamp
from pat_middleware.core.scopes import ScopeRules
from pat_middleware.core.tokens import (
    BODY_LENGTH,
    KEY_ID_LENGTH,
    ParsedToken,
    digest_of,
    parse,
    sha256,
    validate_prefix,
)
from pat_middleware.errors import InvalidToken, PATError, StoreUnavailable
from pat_middleware.stores.base import Store

__all__ = ["Verifier"]

logger = logging.getLogger("pat_middleware")
T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")


#: ``Authorization`` prefixes the hot paths take (any other spelling of the scheme takes the full path).
_BEARER = frozenset({"Bearer ", "bearer ", "BEARER "})
_BEARER_BYTES = frozenset(s.encode() for s in _BEARER)
_compare_digest = hmac.compare_digest


class Verifier:
    """The verification rules and the in-process cache (no I/O).

    ``cached`` is the hot path: a local hit costs one dict lookup, one
    SHA-256 and one constant-time compare. ``verify_flow`` is everything
    else, as a flow.
    """

    def __init__(
        self,
        *,
        hasher: Hasher,
        prefix: str,
        clock: Callable[[], float],
        shared: SharedCache | None = None,
        scope_rules: ScopeRules | None = None,
        local_cache_size: int = 10_000,
        local_ttl: float = 5.0,
        subscribed_ttl: float = 300.0,
        shared_ttl: float = 60.0,
        negative_ttl: float = 60.0,
        failure_window: float = 60.0,
        failure_limit: int = 10,
        key_failure_limit: int | None = None,
        last_used_interval: float = 60.0,
        last_used_ips: int = 5,
        revocation_poll: float | None = defaults.REVOCATION_POLL,
        revocation_lookback: float = 30.0,
        on_event: EventHook | None = None,
        unused_after: timedelta | None = None,
    ) -> None:
        self.hasher = hasher
        self.prefix = validate_prefix(prefix)
        self.clock = clock
        self.shared = shared
        self.scope_rules = scope_rules or ScopeRules()
        self.local = LocalCache(limits.count("local_cache_size", local_cache_size))
        self.local_ttl = limits.seconds("local_ttl", local_ttl)
        self.subscribed_ttl = limits.seconds("subscribed_ttl", subscribed_ttl)
        self.shared_ttl = limits.seconds("shared_ttl", shared_ttl)
        self.negative_ttl = limits.seconds("negative_ttl", negative_ttl)
        self.failure_window = limits.seconds("failure_window", failure_window)
        self.failure_limit = limits.count("failure_limit", failure_limit)
        if key_failure_limit is None:
            key_failure_limit = min(2 * self.failure_limit, 1_000_000)
        #: Failed cold verifications of one key id from all addresses (and processes)
        #: in a window before only its owner's known addresses are still checked.
        self.key_failure_limit = limits.count("key_failure_limit", key_failure_limit)
        self.last_used_interval = limits.seconds("last_used_interval", last_used_interval)
        self.last_used_ips = limits.count("last_used_ips", last_used_ips, high=1000)
        #: Seconds between two polls of the store's change feed (``None``: no feed;
        #: local entries then live ``local_ttl`` without the invalidation channel).
        self.revocation_poll = (
            None if revocation_poll is None else limits.poll_interval("revocation_poll", revocation_poll)
        )
        self.revocation_lookback = limits.seconds("revocation_lookback", revocation_lookback, high=3600.0)
        #: Local entries are stale from this moment whatever their own TTL (moved on by
        #: each successful poll of the change feed; infinite without a feed).
        self.trusted_until = math.inf
        self.on_event = on_event
        self.unused_after = unused_after  #: ``Policy.revoke_unused_after``: older last uses are ``inactive``
        self.watch_addresses = False  #: emit ``new_address`` (set by ``PATAuth`` for its security log)
        #: Logs a store outage once with its cause, and its end.
        self.store_outage = OutageLog("token store")
        self.counts = VerifierCounts()  #: for metrics; plain ints, so the hot path pays one increment
        #: Called with each argon2 run's and each store call's seconds (set by metrics).
        self.on_argon2: Callable[[float], None] | None = None
        self.on_store_call: Callable[[float], None] | None = None
        self._token_length = len(prefix) + 1 + BODY_LENGTH
        self._key_id = slice(len(prefix) + 1, len(prefix) + 1 + KEY_ID_LENGTH)
        self._header_length = len("Bearer ") + self._token_length
        self._header_key_id = slice(self._key_id.start + 7, self._key_id.stop + 7)
        self._entries = self.local._entries  # the hot path reads the dict directly
        self._touched = self.local._touched
        self._listening = 0  # the pid whose listener and feed were started
        #: Runs a flow off the request (set by ``PATAuth``: its background thread).
        self.defer: Callable[[Flow[None]], None] | None = None
        #: Starts the revocation feed (set by ``PATAuth``), on the first cold verification.
        self.start_feed: Callable[[], None] | None = None

    # -- hot path -----------------------------------------------------------
    def cached(self, token: str, client_ip: str | None = None) -> Principal | None:
        """The principal from the local cache, or ``None`` on a miss or stale entry. No I/O.
        Raises ``InvalidToken`` for a cached token now expired, revoked or used from a disallowed address."""
        if type(token) is not str or len(token) != self._token_length:
            return None
        return self._hit(token[self._key_id], token.encode("utf-8", "surrogatepass"), client_ip)

    def cached_header(self, value: bytes, client_ip: str | None = None) -> Principal | None:
        """:meth:`cached` for one raw ``Authorization`` value (bytes, as ASGI gives it)
        of the plain form ``Bearer <token>`` (scheme as ``Bearer``, ``bearer`` or
        ``BEARER``): no decoding, the token's bytes are hashed as they came.
        ``None`` means: take the full path. No I/O."""
        if len(value) != self._header_length or not (value.startswith(b"Bearer ") or value[:7] in _BEARER_BYTES):
            return None
        return self._hit(value[self._header_key_id].decode("latin-1"), value[7:], client_ip)

    def _hit(self, key_id: str, token: bytes, client_ip: str | None) -> Principal | None:
        """The hot path proper: one dict lookup, one SHA-256, one constant-time compare."""
        hit = self._entries.get(key_id)
        if hit is None:
            return None
        entry, fresh_until = hit
        if not _compare_digest(entry.digest, sha256(token).digest()):
            return None
        now = self.clock()
        if now >= fresh_until or now >= self.trusted_until:
            return None
        if (
            now < entry.valid_until
            and not entry.networks
            and self._touched.get((entry.principal.token_id, client_ip), 0.0) > now
        ):
            self.counts.local += 1
            return entry.principal  # the common case, with accept()'s checks inlined
        principal = self.accept(entry, now, client_ip)
        self.counts.local += 1
        return principal

    def cached_bearer(self, authorization: str, client_ip: str | None = None) -> Principal | None:
        """:meth:`cached` for one ``Authorization`` value of the plain form ``Bearer <token>``.

        The edges' hot path: no header grammar to check, since only a token
        whose digest matches a verified one can hit. ``None`` means: take the
        full path (:func:`request_token`, then :meth:`verify_flow`).
        """
        if authorization[:7] not in _BEARER or len(authorization) != self._header_length:
            return None
        return self._hit(
            authorization[self._header_key_id], authorization[7:].encode("utf-8", "surrogatepass"), client_ip
        )

    def accept(self, entry: CachedToken, now: float, client_ip: str | None, record_use: bool = True) -> Principal:
        """Check expiry, scheduled revocation and address; return the principal. With
        ``record_use``, also schedule the last-used write (at most once per token and
        address per ``last_used_interval``, off the request).
        """
        if entry.expires_at is not None and now >= entry.expires_at:
            raise self.reject(entry.token_id, "expired", now, client_ip, entry.principal.user_id)
        if entry.revokes_at is not None and now >= entry.revokes_at:
            raise self.reject(entry.token_id, "revoked", now, client_ip, entry.principal.user_id)
        if entry.networks and (client_ip is None or not address_in(client_ip, entry.networks)):
            raise self.reject(entry.token_id, "ip_not_allowed", now, client_ip, entry.principal.user_id)
        if record_use and self._touched.get((entry.token_id, client_ip), 0.0) <= now:
            self._schedule_touch(entry.token_id, client_ip, now, entry.principal.user_id)
        return entry.principal

    def reject(
        self,
        token_id: str | None,
        reason: str,
        now: float,
        client_ip: str | None = None,
        user_id: str | None = None,
    ) -> InvalidToken:
        """Emit a ``failed`` event and return the error to raise."""
        self.counts.refused[reason] += 1
        emit(self.on_event, Event("failed", from_timestamp(now), token_id, user_id, reason, client_ip))
        return InvalidToken(reason, token_id)

    # -- cold path ----------------------------------------------------------
    def verify_flow(self, token: str, client_ip: str | None = None, record_use: bool = True) -> Flow[Principal]:
        """Verify a token that the hot path could not: shared cache, store, hash.

        ``record_use=False`` checks without counting as a use (no last-used write).
        """
        now = self.clock()
        try:
            parts = parse(token, self.prefix)
        except InvalidToken:
            raise self.reject(None, "malformed", now, client_ip) from None
        self._listen()
        key_id, digest = parts.key_id, digest_of(token)
        generation = self.local.generation
        hit = self.local.get(key_id)
        stale = None
        if hit is not None and hmac.compare_digest(hit[0].digest, digest):
            if now < hit[1] and now < self.trusted_until:
                principal = self.accept(hit[0], now, client_ip, record_use)
                self.counts.local += 1
                return principal
            stale = hit[0]  # verified before; the store decides whether it still stands

        reason = self.local.negative(key_id, digest, now)
        if reason is not None:
            raise self.reject(key_id, reason, now, client_ip)
        failures = failures_all = 0  # other processes' (Redis); this process's are read below
        # A stale entry may have missed an invalidation (the channel was lost):
        # only the store may clear it, never an entry in the shared cache.
        if self.shared is not None and stale is None:
            lookup = yield from self.cache_call(SharedCache.lookup, key_id, digest, client_ip)
            if lookup is not None:
                if lookup.negative is not None:
                    raise self.reject(key_id, lookup.negative, now, client_ip)
                failures, failures_all = lookup.failures, lookup.failures_all
                shared_entry = CachedToken.from_shared(lookup.entry)
                if shared_entry is not None and hmac.compare_digest(shared_entry.digest, digest):
                    self._fill(shared_entry, now, generation)
                    principal = self.accept(shared_entry, now, client_ip, record_use)
                    self.counts.shared += 1
                    return principal
        # Failures are counted per key id and client address (so a flood of wrong
        # secrets for a public key id cannot lock the owner out from elsewhere) and
        # per key id across all addresses (so a flood from many addresses cannot
        # burn argon2 without bound; the owner's own addresses keep their budget).
        # Secrets being checked right now count too: concurrent requests would
        # otherwise all pass before any failure is recorded. Only *other* secrets
        # count, so a burst of one real token is never throttled.
        others, others_all = self.local.begin_attempt(key_id, client_ip, digest)
        try:
            # read once this attempt is registered: one that ended meanwhile is in
            # the failure count, one still running is among the others
            mine, mine_all = self.local.failures(key_id, client_ip, now, self.failure_window)
            flooded = False
            if stale is None:
                if max(failures, mine) + others >= self.failure_limit:
                    raise self.reject(key_id, "throttled", now, client_ip)
                flooded = max(failures_all, mine_all) + others_all >= self.key_failure_limit
                trusted = self.local.trusted(key_id, now) if flooded else None
                if trusted is not None and client_ip not in trusted:
                    raise self.reject(key_id, "throttled", now, client_ip)
            return (
                yield from self._verify_against_store(
                    parts, digest, stale, now, generation, client_ip, record_use, flooded
                )
            )
        finally:
            self.local.end_attempt(key_id, client_ip, digest)

    def _verify_against_store(
        self,
        parts: ParsedToken,
        digest: bytes,
        stale: CachedToken | None,
        now: float,
        generation: int,
        client_ip: str | None,
        record_use: bool,
        flooded: bool,
    ) -> Flow[Principal]:
        """The store read, the hash check (skipped for a stale entry whose verifier
        is unchanged), and filling both caches.

        Before any argon2 run: a client address outside the token's allowed
        networks is refused (and not counted: such a flood never reaches argon2),
        and so is, while the key id is ``flooded``, one that is not among the
        token's recent addresses.
        """
        key_id = parts.key_id
        record = yield from self.store_call(Store.get, key_id)
        if record is None:
            raise (yield from self._fail(key_id, digest, "unknown", now, client_ip))
        networks = networks_of(record)
        if networks and client_ip is not None and not address_in(client_ip, networks):
            raise self.reject(key_id, "ip_not_allowed", now, client_ip, record.user_id)
        trusted = client_ip in record.last_used_ips  # keeps its own budget while the id is flooded
        if flooded:
            self.local.trust(key_id, TrustedAddresses(frozenset(record.last_used_ips), now + self.failure_window))
            if not trusted:
                raise self.reject(key_id, "throttled", now, client_ip)
        verified = stale is not None and stale.verifier == record.hash
        if not verified:
            reserved = yield from self._admit(key_id, client_ip, trusted, now)
            started = time.perf_counter()
            verified = yield from perform(Hasher.verify, record.hash, parts.secret)
            self.counts.argon2 += 1
            if self.on_argon2 is not None:
                self.on_argon2(time.perf_counter() - started)
            if not verified:
                raise (yield from self._fail(key_id, digest, "bad_secret", now, client_ip, record.user_id, reserved))
            if reserved:
                yield from self.cache_call(SharedCache.refund, key_id, client_ip)
        state = record.state(from_timestamp(now), self.unused_after)
        if state != "active" and state != "rotated":
            raise (yield from self._fail(key_id, digest, state, now, client_ip, record.user_id))
        if self.hasher.needs_rehash(record.hash):
            new_hash = yield from perform(Hasher.hash, parts.secret)
            updated = yield from self.store_call(Store.update, key_id, {"hash": new_hash})
            record = updated or record
        entry = self.entry_for(record, digest)
        self._fill(entry, now, generation)
        if self.shared is not None:
            ttl = self._shared_ttl(entry, now)
            if ttl > 0:
                yield from self.cache_call(SharedCache.store, key_id, entry.to_bytes(), ttl)
        emit(self.on_event, Event("verified", from_timestamp(now), key_id, record.user_id, None, client_ip))
        principal = self.accept(entry, now, client_ip, record_use)
        self.counts.store += 1
        return principal

    def entry_for(self, record: TokenRecord, digest: bytes) -> CachedToken:
        """The cache entry for a verified record (its scopes expanded by the scope rules)."""
        return CachedToken.for_record(record, digest, self.scope_rules.expand(record.scopes))

    def _admit(self, key_id: str, client_ip: str | None, trusted: bool, now: float) -> Flow[bool]:
        """Reserve an argon2 run in the shared failure counters before it starts, so
        every process sees it at once (counting only finished failures let two
        processes flooding together each run a full budget); throttle if over
        budget. True when a reservation was made (refunded if the secret matches)."""
        counts = yield from self.cache_call(SharedCache.admit, key_id, client_ip, self.failure_window)
        if counts is None:  # no Redis, or it is down: the local counts decided
            return False
        mine, everyone = counts
        if mine > self.failure_limit or (everyone > self.key_failure_limit and not trusted):
            yield from self.cache_call(SharedCache.refund, key_id, client_ip)
            raise self.reject(key_id, "throttled", now, client_ip)
        return True

    def _fail(
        self,
        key_id: str,
        digest: bytes,
        reason: str,
        now: float,
        client_ip: str | None,
        user_id: str | None = None,
        counted: bool = False,
    ) -> Flow[InvalidToken]:
        """Record a failure locally and in the shared cache (its counters too, unless
        ``counted``: reserved by :meth:`_admit`); return the error to raise."""
        self.local.fail(key_id, digest, reason, now, self.negative_ttl, self.failure_window, client_ip)
        if self.shared is not None:
            failure = Failure(key_id, digest, reason, self.negative_ttl, self.failure_window, client_ip, not counted)
            yield from self.cache_call(SharedCache.fail, failure)
        return self.reject(key_id, reason, now, client_ip, user_id)

    def _fill(self, entry: CachedToken, now: float, generation: int) -> None:
        self.local.put(entry, now + self._local_lifetime(), generation)

    def _local_lifetime(self) -> float:
        """How long a new local entry is trusted: long while revocations are heard
        (the channel is subscribed; or, without Redis, the change feed runs), and
        ``local_ttl`` while they may be missed (no feed, or Redis configured but
        the channel is down: then the feed also polls faster, see :meth:`degraded`)."""
        if self.shared is not None:
            return self.subscribed_ttl if self.shared.subscribed else self.local_ttl
        return self.local_ttl if self.revocation_poll is None else self.subscribed_ttl

    def degraded(self) -> bool:
        """True while a configured invalidation channel is not subscribed."""
        return self.shared is not None and not self.shared.subscribed

    def _shared_ttl(self, entry: CachedToken, now: float) -> float:
        ends = [t for t in (entry.expires_at, entry.revokes_at) if t is not None]
        return min([self.shared_ttl, *(t - now for t in ends)])

    def _listen(self) -> None:
        if self._listening != (pid := os.getpid()):
            self._listening = pid
            if self.shared is not None:
                self.shared.listen(self.local.invalidate, self.local.expire_all)
            if self.start_feed is not None:
                self.start_feed()

    # -- I/O wrappers shared by every flow --------------------------------------
    def store_call(self, method: Callable[Concatenate[Store, P], R], /, *args: P.args, **kwargs: P.kwargs) -> Flow[R]:
        """The store effect ``method(store, *args, **kwargs)``; any failure that is not a
        ``PATError`` becomes ``StoreUnavailable``. An outage is logged once, with its
        cause, and once when the store answers again (:attr:`store_outage`)."""
        started = time.perf_counter()
        try:
            result: R = yield Call(method, args, kwargs or NO_KEYWORDS)  # perform(), one generator less
        except StoreUnavailable as exc:
            self.counts.store_errors += 1
            self.store_outage.failed(exc)
            raise
        except PATError:
            raise
        except Exception as exc:
            self.counts.store_errors += 1
            self.store_outage.failed(exc)
            raise StoreUnavailable() from exc
        if self.on_store_call is not None:
            self.on_store_call(time.perf_counter() - started)
        self.store_outage.ok()
        return result

    def cache_call(
        self, method: Callable[Concatenate[SharedCache, P], R], /, *args: P.args, **kwargs: P.kwargs
    ) -> Flow[R | None]:
        """The shared-cache effect ``method(cache, *args, **kwargs)``; ``None`` without a shared
        cache, and on failure (logged: the store decides)."""
        if self.shared is None:
            return None
        try:
            result: R = yield Call(method, args, kwargs or NO_KEYWORDS)  # perform(), one generator less
        except CacheUnavailable:
            self.counts.cache_errors += 1
            return None
        except Exception:
            self.counts.cache_errors += 1
            logger.exception("shared cache call %s failed", method.__name__)
            return None
        return result

    # -- after a successful verification -------------------------------------
    def _schedule_touch(self, token_id: str, client_ip: str | None, now: float, user_id: str) -> None:
        if self.defer is not None and self.local.touch_due(token_id, client_ip, now, self.last_used_interval):
            self.defer(self._touch(token_id, client_ip, now, user_id))

    def _touch(self, token_id: str, client_ip: str | None, now: float, user_id: str) -> Flow[None]:
        if self.shared is not None:
            claimed = yield from self.cache_call(SharedCache.claim_touch, token_id, client_ip, self.last_used_interval)
            if claimed is False:
                return
        at = from_timestamp(now)
        try:
            fresh = yield from self.store_call(Store.touch, token_id, at, client_ip, self.last_used_ips)
        except StoreUnavailable:
            logger.warning("could not record the last use of token %s", token_id)
            return
        if fresh and self.watch_addresses:  # the first recorded use from this address
            emit(self.on_event, Event("new_address", at, token_id, user_id, None, client_ip))

    # -- the revocation feed (core/feed.py) and the manager's invalidations -----------
    def changes_flow(self, since: datetime) -> Flow[list[tuple[str, datetime]]]:
        """The store's changes at or after ``since``."""
        return (yield from self.store_call(Store.changes_since, since))

    def set_trusted_until(self, moment: float) -> None:
        """Local entries are stale from ``moment`` on (the feed's deadline)."""
        self.trusted_until = moment

    def forget_flow(self, token_ids: list[str]) -> Flow[None]:
        """Drop ids the feed reported from the local and the shared cache (no publish:
        every process reads the feed itself)."""
        self.local.invalidate(token_ids)
        yield from self.cache_call(SharedCache.forget, token_ids)

    def invalidate_flow(self, token_ids: list[str]) -> Flow[None]:
        """Drop ids from the local cache, then from the shared cache (and tell other processes)."""
        if not token_ids:
            return
        self.local.invalidate(token_ids)
        yield from self.cache_call(SharedCache.invalidate, token_ids)
