"""Data helpers every store backend shares: normalising records and changes,
ordering, and the ``touch`` IP list merge. No I/O, no policy.

Backends call these instead of re-implementing them, so a record means the
same thing whichever store holds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pat_middleware.core.audit import LogEntry
from pat_middleware.core.models import TokenRecord, utc
from pat_middleware.stores.base import UPDATABLE_FIELDS

__all__ = [
    "TUPLE_FIELDS",
    "check_changes",
    "created_order",
    "entry_from_row",
    "expiry_order",
    "merge_ips",
    "normalize_record",
    "record_from_row",
    "revocable_at",
]

#: Record fields holding tuples of strings.
TUPLE_FIELDS = frozenset({"scopes", "last_used_ips", "allowed_cidrs"})
_STR_FIELDS = frozenset({"name", "description", "hash"})


def _maybe_utc(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)


def _str_tuple(field: str, value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{field} must be a sequence of strings")
    return tuple(value)


def normalize_record(record: TokenRecord) -> TokenRecord:
    """``record`` with aware UTC datetimes (naive ones taken as UTC) and tuple fields."""
    return record.evolve(
        created_at=utc(record.created_at),
        expires_at=_maybe_utc(record.expires_at),
        last_used_at=_maybe_utc(record.last_used_at),
        revoked_at=_maybe_utc(record.revoked_at),
        scopes=tuple(record.scopes),
        last_used_ips=tuple(record.last_used_ips),
        allowed_cidrs=tuple(record.allowed_cidrs),
        resources=None if record.resources is None else tuple(record.resources),
    )


def check_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Validate and normalise the ``changes`` given to ``Store.update``.

    Raises ValueError for a key outside :data:`UPDATABLE_FIELDS` or a value of
    the wrong type. Datetimes come back aware UTC, sequences as tuples.
    """
    unknown = sorted(set(changes) - UPDATABLE_FIELDS)
    if unknown:
        allowed = ", ".join(sorted(UPDATABLE_FIELDS))
        raise ValueError(f"cannot update {', '.join(unknown)}; updatable fields: {allowed}")
    clean: dict[str, Any] = {}
    for key, value in changes.items():
        if key in TUPLE_FIELDS:
            clean[key] = _str_tuple(key, value)
        elif key == "resources":
            clean[key] = None if value is None else _str_tuple(key, value)
        elif key in _STR_FIELDS:
            if not isinstance(value, str):
                raise ValueError(f"{key} must be a string")
            clean[key] = value
        else:  # expires_at
            if value is not None and not isinstance(value, datetime):
                raise ValueError("expires_at must be a datetime or None")
            clean[key] = _maybe_utc(value)
    return clean


def merge_ips(current: Sequence[str], ip: str | None, keep: int) -> tuple[str, ...]:
    """``ip`` first, then ``current`` without it, at most ``keep`` entries."""
    if ip is None:
        return tuple(current[: max(keep, 0)])
    return (ip, *(x for x in current if x != ip))[: max(keep, 0)]


def revocable_at(record: TokenRecord, at: datetime) -> bool:
    """True when ``record`` is not revoked at ``at`` (live, or revocation scheduled later)."""
    return record.revoked_at is None or record.revoked_at > at


def created_order(record: TokenRecord) -> tuple[datetime, str]:
    """Sort key of listings: oldest first, ties by id."""
    return (record.created_at, record.id)


def expiry_order(record: TokenRecord) -> tuple[datetime, str]:
    """Sort key of ``list_expiring``: soonest expiry first, ties by id."""
    assert record.expires_at is not None
    return (record.expires_at, record.id)


def _maybe_aware(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)


def record_from_row(row: Mapping[Any, Any]) -> TokenRecord:
    """The record of a tokens-table row whose JSON columns are already decoded
    (SQLAlchemy, the Django ORM): timestamps made aware UTC, lists made tuples."""
    resources = row["resources"]
    return TokenRecord(
        id=row["id"],
        user_id=row["user_id"],
        name=row["name"],
        hash=row["hash"],
        scopes=tuple(row["scopes"] or ()),
        description=row["description"] or "",
        created_at=utc(row["created_at"]),
        expires_at=_maybe_aware(row["expires_at"]),
        last_used_at=_maybe_aware(row["last_used_at"]),
        last_used_ips=tuple(row["last_used_ips"] or ()),
        revoked_at=_maybe_aware(row["revoked_at"]),
        family_id=row["family_id"],
        rotated_from=row["rotated_from"],
        allowed_cidrs=tuple(row["allowed_cidrs"] or ()),
        resources=None if resources is None else tuple(resources),
    )


def entry_from_row(row: Mapping[Any, Any]) -> LogEntry:
    """The security-log entry of a log-table row whose ``details`` is decoded."""
    return LogEntry(
        row["id"], utc(row["at"]), row["kind"], row["token_id"], row["user_id"], row["actor"],
        row["client_ip"], row["reason"], dict(row["details"] or {}),
    )  # fmt: skip
