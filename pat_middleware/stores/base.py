"""The store protocol: one sync and one async shape with the same method names.

A store is the source of truth for token records. Stores hold no rules
beyond what must be atomic (a live name is unique per user; revoke and rotate
are compare-and-set); the rules live in :mod:`pat_middleware.core`.

Terms used below:

* *live* means ``revoked_at IS NULL`` (expired tokens are still live for the
  name-uniqueness rule until they are revoked or purged);
* *revocable at t* means ``revoked_at IS NULL OR revoked_at > t`` (a token
  whose revocation was scheduled by a rotation grace period can still be cut
  short).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from ..models import TokenRecord

__all__ = ["UPDATABLE_FIELDS", "AsyncStore", "Store"]

#: Fields :meth:`Store.update` may change.
UPDATABLE_FIELDS = frozenset({"name", "description", "expires_at", "scopes", "allowed_cidrs", "hash"})


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

    def revoke(self, token_id: str, at: datetime) -> bool:
        """Set ``revoked_at = at`` if the record is revocable at ``at``; True if it changed."""

    def revoke_family(self, family_id: str, at: datetime) -> list[str]:
        """Revoke every record of the family revocable at ``at``; return their ids."""

    def revoke_user(self, user_id: str, at: datetime) -> list[str]:
        """Revoke every record of the user revocable at ``at``; return their ids."""

    def rotate(self, old_id: str, new: TokenRecord, revoke_at: datetime) -> bool:
        """Atomically set the old record's ``revoked_at`` (only if it is live) and insert ``new``.

        Returns False, writing nothing, when the old record is missing or not live.
        """

    def touch(self, token_id: str, at: datetime, ip: str | None, keep_ips: int) -> None:
        """Record a use: ``last_used_at = at``; put ``ip`` first in ``last_used_ips``
        (no duplicates, at most ``keep_ips``)."""

    def purge(self, before: datetime) -> list[str]:
        """Delete records revoked or expired at or before ``before``; return their ids."""

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
    async def revoke(self, token_id: str, at: datetime) -> bool: ...
    async def revoke_family(self, family_id: str, at: datetime) -> list[str]: ...
    async def revoke_user(self, user_id: str, at: datetime) -> list[str]: ...
    async def rotate(self, old_id: str, new: TokenRecord, revoke_at: datetime) -> bool: ...
    async def touch(self, token_id: str, at: datetime, ip: str | None, keep_ips: int) -> None: ...
    async def purge(self, before: datetime) -> list[str]: ...
    async def close(self) -> None: ...
