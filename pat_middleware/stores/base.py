"""The store protocol: one sync and one async shape with the same method names.

A store is the source of truth for token records. Stores hold no rules
beyond what must be atomic (a live name is unique per user; revoke and rotate
are compare-and-set; a revoke takes the token's predecessors with it); the
rules live in :mod:`pat_middleware.core.verifier`.

Terms used below:

* *live* means ``revoked_at IS NULL`` (expired tokens are still live for the
  name-uniqueness rule until they are revoked or purged);
* *revocable at t* means ``revoked_at IS NULL OR revoked_at > t`` (a token
  whose revocation was scheduled by a rotation grace period can still be cut
  short);
* the *predecessors* of a record are the records it replaced, directly or
  not: every record reached by following ``rotated_from`` from it, plus any
  other record of its family created strictly before it (which still covers
  the records beyond a link that ``purge`` deleted). Following the links,
  not only the clock, keeps a predecessor created in the same microsecond
  (or, by another host's skewed clock, "after" it) in the set, and a
  successor created in the same microsecond out of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from pat_middleware.core.audit import LogEntry, LogQuery
from pat_middleware.core.models import TokenRecord
from pat_middleware.core.query import TokenQuery

__all__ = ["CHANGE_RETENTION", "UPDATABLE_FIELDS", "VALIDITY_FIELDS", "AsyncStore", "Store"]

#: Fields :meth:`Store.update` may change.
UPDATABLE_FIELDS = frozenset({"name", "description", "expires_at", "scopes", "allowed_cidrs", "resources", "hash"})
#: Fields whose change is a change of the token's validity (reported by ``changes_since``).
VALIDITY_FIELDS = UPDATABLE_FIELDS - {"hash", "description"}
#: How long a store keeps reporting a change: far longer than any feed's lookback.
CHANGE_RETENTION = timedelta(hours=1)


@runtime_checkable
class Store(Protocol):
    """A synchronous token store. Every method may raise ``StoreUnavailable``."""

    def get(self, token_id: str) -> TokenRecord | None:
        """The record with that id, or ``None``."""

    def list_user(self, user_id: str) -> list[TokenRecord]:
        """All of a user's records, every state, oldest first."""

    def list_family(self, family_id: str) -> list[TokenRecord]:
        """All records of a rotation family, oldest first."""

    def list_expiring(self, start: datetime, end: datetime) -> list[TokenRecord]:
        """Records with ``start < expires_at <= end`` that are not revoked at ``start``."""

    def insert(self, record: TokenRecord) -> None:
        """Add a record. Raises ``NameTaken`` if the user has a live token of that name."""

    def update(self, token_id: str, changes: Mapping[str, Any]) -> TokenRecord | None:
        """Apply ``changes`` (keys from :data:`UPDATABLE_FIELDS`) to a live record.

        Returns the new record, or ``None`` when the id is unknown or the
        record is not live. Raises ``NameTaken`` on a live-name clash.
        """

    def changes_since(self, since: datetime) -> list[tuple[str, datetime]]:
        """``(id, changed_at)`` of every record whose validity changed at or after ``since``.

        Every write that revokes (``revoke``, ``revoke_family``, ``revoke_user``,
        the old record in ``rotate``) or changes a field of
        :data:`VALIDITY_FIELDS` stamps the record's ``changed_at`` with the
        store's clock (the database server's where there is one), in the same
        atomic operation; ``purge`` need not. One indexed query, whatever the
        number of records; changes are reported for at least
        :data:`CHANGE_RETENTION`.
        """

    def revoke(self, token_id: str, at: datetime) -> list[str]:
        """Revoke the record and its predecessors, in one atomic operation.

        Sets ``revoked_at = at`` on the record ``token_id`` and on each of its
        predecessors (see the module doc) that is revocable at ``at``, so a
        predecessor still inside a rotation grace period is cut off together
        with its successor: a crash can leave all of them revoked or none.
        Returns the ids whose ``revoked_at`` changed (the record's and/or its
        predecessors'): empty when the id is unknown or nothing was revocable. Idempotent in effect: called
        again on an already revoked record, it still revokes any predecessor
        that is revocable at ``at`` (the repair after a partial, older revoke).
        """

    def revoke_family(self, family_id: str, at: datetime) -> list[str]:
        """Revoke every record of the family revocable at ``at``, in one atomic
        operation; return their ids."""

    def revoke_user(self, user_id: str, at: datetime) -> list[str]:
        """Revoke every record of the user revocable at ``at``, in one atomic
        operation; return their ids."""

    def rotate(self, old_id: str, new: TokenRecord, revoke_at: datetime) -> bool:
        """Atomically set the old record's ``revoked_at`` (only if it is live) and insert ``new``.

        Returns False, writing nothing, when the old record is missing or not live.
        """

    def touch(self, token_id: str, at: datetime, ip: str | None, keep_ips: int) -> bool | None:
        """Record a use: ``last_used_at = at``; put ``ip`` first in ``last_used_ips``
        (no duplicates, at most ``keep_ips``). Returns True when ``ip`` was not among
        the record's ``last_used_ips`` before (the first recorded use from that
        address: the ``new_address`` event), else False (also for an unknown id or
        no ``ip``); ``None`` from a store that cannot tell (one written for 0.1)."""

    def purge(self, before: datetime) -> list[str]:
        """Delete records revoked or expired at or before ``before``; return their ids."""

    def purgeable(self, before: datetime) -> list[str]:
        """The ids ``purge(before)`` would delete now, in the order it returns them;
        deletes nothing (``pat purge --dry-run``). Same predicate as ``purge``."""

    # -- administration and the security log (release 0.2) -----------------

    def search(self, query: TokenQuery) -> list[TokenRecord]:
        """Every user's records that :func:`~pat_middleware.core.query.matches` ``query``
        and come after its cursor (``query.after``), in ``query.sort`` order (ties by
        id), at most ``query.limit``. An indexed query where the store has indexes."""

    def append_log(self, entries: list[LogEntry]) -> None:
        """Keep security-log entries (ids are unique; an id already kept is ignored)."""

    def read_log(self, query: LogQuery) -> list[LogEntry]:
        """Entries that :func:`~pat_middleware.core.audit.log_matches` ``query``, newest
        (highest id) first, at most ``query.limit``."""

    def prune_log(self, before: datetime) -> int:
        """Delete log entries dated before ``before`` and notices remembered until
        before it; return how many log entries went."""

    def claim_notice(self, token_id: str, key: str, until: datetime) -> bool:
        """Remember that the notice ``key`` about ``token_id`` was sent (kept at least
        until ``until``); True the first time, False if it was remembered already.
        Atomic: of two concurrent claims exactly one gets True."""

    def close(self) -> None:
        """Release connections."""


@runtime_checkable
class AsyncStore(Protocol):
    """The asynchronous twin of :class:`Store`: same names, same meaning."""

    async def get(self, token_id: str) -> TokenRecord | None: ...
    async def list_user(self, user_id: str) -> list[TokenRecord]: ...
    async def list_family(self, family_id: str) -> list[TokenRecord]: ...
    async def list_expiring(self, start: datetime, end: datetime) -> list[TokenRecord]: ...
    async def insert(self, record: TokenRecord) -> None: ...
    async def update(self, token_id: str, changes: Mapping[str, Any]) -> TokenRecord | None: ...
    async def changes_since(self, since: datetime) -> list[tuple[str, datetime]]: ...
    async def revoke(self, token_id: str, at: datetime) -> list[str]: ...
    async def revoke_family(self, family_id: str, at: datetime) -> list[str]: ...
    async def revoke_user(self, user_id: str, at: datetime) -> list[str]: ...
    async def rotate(self, old_id: str, new: TokenRecord, revoke_at: datetime) -> bool: ...
    async def touch(self, token_id: str, at: datetime, ip: str | None, keep_ips: int) -> bool | None: ...
    async def purge(self, before: datetime) -> list[str]: ...
    async def purgeable(self, before: datetime) -> list[str]: ...
    async def search(self, query: TokenQuery) -> list[TokenRecord]: ...
    async def append_log(self, entries: list[LogEntry]) -> None: ...
    async def read_log(self, query: LogQuery) -> list[LogEntry]: ...
    async def prune_log(self, before: datetime) -> int: ...
    async def claim_notice(self, token_id: str, key: str, until: datetime) -> bool: ...
    async def close(self) -> None: ...
