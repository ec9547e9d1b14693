"""``MemoryStore``: records in a dict, for tests and throwaway demos.

Nothing survives the process. Every write and listing holds one lock, so the
store is thread-safe and each operation is atomic; ``get`` is a single dict
lookup of an immutable record and needs no lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pat_middleware.core.audit import LogEntry, LogQuery, answer_log
from pat_middleware.core.models import TokenRecord, utc
from pat_middleware.core.query import TokenQuery, answer
from pat_middleware.errors import NameTaken
from pat_middleware.stores._common import (
    check_changes,
    created_order,
    expiry_order,
    merge_ips,
    normalize_record,
    revocable_at,
)
from pat_middleware.stores.base import CHANGE_RETENTION, VALIDITY_FIELDS

__all__ = ["MemoryStore"]


class MemoryStore:
    """A thread-safe in-process :class:`~pat_middleware.stores.base.Store`."""

    def __init__(self) -> None:
        self._records: dict[str, TokenRecord] = {}
        self._changed: dict[str, datetime] = {}  # id -> changed_at, oldest first
        self._log_entries: dict[str, LogEntry] = {}
        self._notices: dict[tuple[str, str], datetime] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._records)} records)"

    # -- helpers (call with the lock held) ---------------------------------

    def _select(self, keep: Callable[[TokenRecord], bool]) -> list[TokenRecord]:
        return sorted((r for r in self._records.values() if keep(r)), key=created_order)

    def _check_name(self, user_id: str, name: str, except_id: str | None = None) -> None:
        for other in self._records.values():
            if other.user_id == user_id and other.name == name and other.revoked_at is None and other.id != except_id:
                raise NameTaken(name)

    def _add(self, record: TokenRecord) -> None:
        if record.id in self._records:
            raise ValueError(f"a token with id {record.id!r} already exists")
        self._check_name(record.user_id, record.name)
        self._records[record.id] = record

    def _stamp(self, token_ids: Iterable[str]) -> None:
        now = datetime.now(UTC)
        for token_id in token_ids:
            self._changed.pop(token_id, None)
            self._changed[token_id] = now
        horizon = now - CHANGE_RETENTION
        while self._changed and next(iter(self._changed.values())) < horizon:
            del self._changed[next(iter(self._changed))]

    def _revoke_matching(self, keep: Callable[[TokenRecord], bool], at: datetime) -> list[str]:
        at = utc(at)
        hits = self._select(lambda r: keep(r) and revocable_at(r, at))
        for record in hits:
            self._records[record.id] = record.evolve(revoked_at=at)
        self._stamp(r.id for r in hits)
        return [r.id for r in hits]

    def _lineage(self, token_id: str) -> Callable[[TokenRecord], bool]:
        """Matches the record and its predecessors (see ``stores.base``)."""
        record = self._records.get(token_id)
        if record is None:
            return lambda r: False
        chain = {token_id}
        previous = record.rotated_from
        while previous is not None and previous not in chain:
            chain.add(previous)
            older = self._records.get(previous)
            previous = None if older is None else older.rotated_from
        family, created = record.family_id, record.created_at
        return lambda r: r.family_id == family and (r.id in chain or r.created_at < created)

    # -- Store protocol ------------------------------------------------------

    def get(self, token_id: str) -> TokenRecord | None:
        """The record with that id, or ``None``."""
        return self._records.get(token_id)

    def list_user(self, user_id: str) -> list[TokenRecord]:
        """All of a user's records, oldest first."""
        with self._lock:
            return self._select(lambda r: r.user_id == user_id)

    def list_family(self, family_id: str) -> list[TokenRecord]:
        """All records of a rotation family, oldest first."""
        with self._lock:
            return self._select(lambda r: r.family_id == family_id)

    def list_expiring(self, start: datetime, end: datetime) -> list[TokenRecord]:
        """Records with ``start < expires_at <= end`` not revoked at ``start``, soonest first."""
        start, end = utc(start), utc(end)
        with self._lock:
            hits = [
                r
                for r in self._records.values()
                if r.expires_at is not None and start < r.expires_at <= end and revocable_at(r, start)
            ]
        return sorted(hits, key=expiry_order)

    def insert(self, record: TokenRecord) -> None:
        """Add a record; ``NameTaken`` on a live name clash, ValueError on a duplicate id."""
        record = normalize_record(record)
        with self._lock:
            self._add(record)

    def update(self, token_id: str, changes: Mapping[str, Any]) -> TokenRecord | None:
        """Apply ``changes`` to a live record; ``None`` if unknown or not live."""
        clean = check_changes(changes)
        with self._lock:
            record = self._records.get(token_id)
            if record is None or record.revoked_at is not None:
                return None
            if "name" in clean:
                self._check_name(record.user_id, clean["name"], except_id=token_id)
            record = self._records[token_id] = record.evolve(**clean)
            if not VALIDITY_FIELDS.isdisjoint(clean):
                self._stamp([token_id])
            return record

    def revoke(self, token_id: str, at: datetime) -> list[str]:
        """Revoke the record and its predecessors revocable at ``at``, under one
        hold of the lock; return the ids that changed, oldest first."""
        with self._lock:
            return self._revoke_matching(self._lineage(token_id), at)

    def revoke_family(self, family_id: str, at: datetime) -> list[str]:
        """Revoke the family's records revocable at ``at``; return their ids."""
        with self._lock:
            return self._revoke_matching(lambda r: r.family_id == family_id, at)

    def revoke_user(self, user_id: str, at: datetime) -> list[str]:
        """Revoke the user's records revocable at ``at``; return their ids."""
        with self._lock:
            return self._revoke_matching(lambda r: r.user_id == user_id, at)

    def rotate(self, old_id: str, new: TokenRecord, revoke_at: datetime) -> bool:
        """Revoke the live record ``old_id`` at ``revoke_at`` and insert ``new``, atomically."""
        new, revoke_at = normalize_record(new), utc(revoke_at)
        with self._lock:
            old = self._records.get(old_id)
            if old is None or old.revoked_at is not None:
                return False
            self._records[old_id] = old.evolve(revoked_at=revoke_at)
            try:
                self._add(new)
            except BaseException:
                self._records[old_id] = old
                raise
            self._stamp([old_id])
            return True

    def changes_since(self, since: datetime) -> list[tuple[str, datetime]]:
        """``(id, changed_at)`` of records whose validity changed at or after ``since``."""
        since = utc(since)
        with self._lock:
            return [(token_id, at) for token_id, at in self._changed.items() if at >= since]

    def touch(self, token_id: str, at: datetime, ip: str | None, keep_ips: int) -> bool:
        """Record a use at ``at`` from ``ip``; True when ``ip`` is new to the record."""
        at = utc(at)
        with self._lock:
            record = self._records.get(token_id)
            if record is None:
                return False
            ips = merge_ips(record.last_used_ips, ip, keep_ips)
            self._records[token_id] = record.evolve(last_used_at=at, last_used_ips=ips)
            return ip is not None and ip not in record.last_used_ips

    @staticmethod
    def _purge_predicate(before: datetime) -> Callable[[TokenRecord], bool]:
        """What ``purge`` deletes and ``purgeable`` lists: revoked or expired at or before ``before``."""
        before = utc(before)

        def gone(r: TokenRecord) -> bool:
            return (r.revoked_at is not None and r.revoked_at <= before) or (
                r.expires_at is not None and r.expires_at <= before
            )

        return gone

    def purge(self, before: datetime) -> list[str]:
        """Delete records revoked or expired at or before ``before``; return their ids."""
        with self._lock:
            hits = self._select(self._purge_predicate(before))
            for record in hits:
                del self._records[record.id]
        return [r.id for r in hits]

    def purgeable(self, before: datetime) -> list[str]:
        """The ids :meth:`purge` would delete now; deletes nothing."""
        with self._lock:
            return [r.id for r in self._select(self._purge_predicate(before))]

    # -- administration and the security log -------------------------------

    def search(self, query: TokenQuery) -> list[TokenRecord]:
        """Every user's records answering ``query`` (a scan: no indexes here)."""
        with self._lock:
            records = list(self._records.values())
        return answer(records, query)

    def append_log(self, entries: list[LogEntry]) -> None:
        """Keep log entries (an id already kept is ignored)."""
        with self._lock:
            for entry in entries:
                self._log_entries.setdefault(entry.id, entry)

    def read_log(self, query: LogQuery) -> list[LogEntry]:
        """Entries answering ``query``, newest first."""
        with self._lock:
            entries = list(self._log_entries.values())
        return answer_log(entries, query)

    def prune_log(self, before: datetime) -> int:
        """Delete entries dated before ``before`` (and notices kept until before it)."""
        before = utc(before)
        with self._lock:
            old = [key for key, entry in self._log_entries.items() if entry.at < before]
            for key in old:
                del self._log_entries[key]
            for notice in [n for n, until in self._notices.items() if until < before]:
                del self._notices[notice]
        return len(old)

    def claim_notice(self, token_id: str, key: str, until: datetime) -> bool:
        """True the first time ``key`` is claimed for ``token_id``."""
        with self._lock:
            if (token_id, key) in self._notices:
                return False
            self._notices[(token_id, key)] = utc(until)
            return True

    def close(self) -> None:
        """Nothing to release."""
