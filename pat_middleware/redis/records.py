"""How ``RedisStore`` writes a token record into a hash and reads it back.

Timestamps are integer microseconds since the epoch (exact in Lua numbers and
sorted-set scores); lists are JSON; ``None`` is the empty string.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from pat_middleware.core.models import TokenRecord, utc

__all__ = [
    "FIELDS",
    "decode_record",
    "decode_time",
    "encode_record",
    "encode_time",
    "encode_value",
    "micros",
    "moment",
    "parse_records",
    "text",
]

#: Hash fields of a token record, in the order scripts return them.
FIELDS = (
    "id",
    "user_id",
    "name",
    "hash",
    "scopes",
    "description",
    "created_at",
    "expires_at",
    "last_used_at",
    "last_used_ips",
    "revoked_at",
    "family_id",
    "rotated_from",
    "allowed_cidrs",
    "resources",
)
_TIME_FIELDS = frozenset({"created_at", "expires_at", "last_used_at", "revoked_at"})
_LIST_FIELDS = frozenset({"scopes", "last_used_ips", "allowed_cidrs"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def micros(value: datetime) -> int:
    """``value`` (naive: UTC) as integer microseconds since the epoch, exactly."""
    return (utc(value) - _EPOCH) // _MICROSECOND


def moment(value: int) -> datetime:
    """Inverse of :func:`micros`."""
    return _EPOCH + value * _MICROSECOND


def encode_time(value: datetime | None) -> str:
    """Microseconds as text; ``""`` for ``None``."""
    return "" if value is None else str(micros(value))


def decode_time(value: str) -> datetime | None:
    """Inverse of :func:`encode_time`."""
    return None if value == "" else moment(int(value))


def encode_value(field: str, value: Any) -> str:
    """One record field as its hash value."""
    if field in _TIME_FIELDS:
        return encode_time(value)
    if field in _LIST_FIELDS:
        return json.dumps(list(value))
    if field == "rotated_from":
        return value or ""
    if field == "resources":  # "" (or no field, in a hash an older release wrote): every resource
        return "" if value is None else json.dumps(list(value))
    return str(value)


def encode_record(record: TokenRecord) -> list[str]:
    """The record's hash values in :data:`FIELDS` order."""
    return [encode_value(f, getattr(record, f)) for f in FIELDS]


def _list(raw: str) -> tuple[Any, ...]:
    return () if raw == "[]" else tuple(json.loads(raw))


def decode_record(values: list[Any]) -> TokenRecord | None:
    """Inverse of :func:`encode_record` (``None`` for a missing hash)."""
    if not values or values[0] is None:
        return None
    (token_id, user_id, name, hashed, scopes, description, created_at, expires_at, last_used_at,
     last_used_ips, revoked_at, family_id, rotated_from, allowed_cidrs, resources) = map(text, values)  # fmt: skip
    return TokenRecord(
        id=token_id,
        user_id=user_id,
        name=name,
        hash=hashed,
        scopes=_list(scopes),
        description=description,
        created_at=moment(int(created_at)),
        expires_at=decode_time(expires_at),
        last_used_at=decode_time(last_used_at),
        last_used_ips=_list(last_used_ips),
        revoked_at=decode_time(revoked_at),
        family_id=family_id,
        rotated_from=rotated_from or None,
        allowed_cidrs=_list(allowed_cidrs),
        resources=_list(resources) if resources else None,
    )


def text(value: Any) -> str:
    """A reply value as text (``""`` for nil)."""
    if type(value) is bytes:
        return value.decode()
    return "" if value is None else str(value)


def parse_records(replies: list[Any]) -> list[TokenRecord]:
    """The records of a script that returns a list of ``HMGET`` replies (missing ones skipped)."""
    return [r for r in map(decode_record, replies[0]) if r is not None]
