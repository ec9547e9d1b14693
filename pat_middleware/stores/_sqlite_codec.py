"""Rows of :class:`~pat_middleware.stores.sqlite.SQLiteStore`'s tables and the
values they hold: timestamps as INTEGER microseconds since the Unix epoch (UTC),
string lists as JSON arrays."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from pat_middleware.core.audit import LogEntry
from pat_middleware.core.models import TokenRecord, utc
from pat_middleware.stores._common import TUPLE_FIELDS

__all__ = [
    "COLUMNS",
    "LOG_COLUMNS",
    "encode",
    "from_micros",
    "json_text",
    "json_tuple",
    "log_entry",
    "log_row",
    "maybe_micros",
    "micros",
    "token_record",
    "token_row",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
#: The tokens table's columns, in the order of :func:`token_row` and :func:`token_record`.
COLUMNS = (
    "id, user_id, name, description, scopes, hash, created_at, expires_at, "
    "last_used_at, last_used_ips, revoked_at, family_id, rotated_from, allowed_cidrs, resources"
)
#: The log table's columns, in the order of :func:`log_row` and :func:`log_entry`.
LOG_COLUMNS = "id, at, kind, token_id, user_id, actor, client_ip, reason, details"


def micros(value: datetime) -> int:
    """``value`` as stored: microseconds since the epoch (naive taken as UTC)."""
    return (utc(value) - _EPOCH) // _MICROSECOND


def maybe_micros(value: datetime | None) -> int | None:
    return None if value is None else micros(value)


def from_micros(value: int) -> datetime:
    """A stored timestamp as an aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=value)


def _datetime(value: int | None) -> datetime | None:
    return None if value is None else from_micros(value)


def json_text(values: Iterable[str]) -> str:
    """A string list as its JSON array column."""
    return json.dumps(list(values), separators=(",", ":"))


@lru_cache(maxsize=4096)
def json_tuple(text: str) -> tuple[str, ...]:
    """A JSON array column as a tuple (memoised: scope lists repeat across tokens)."""
    return tuple(json.loads(text))


def _maybe_json(values: Iterable[str] | None) -> str | None:
    return None if values is None else json_text(values)


def encode(field: str, value: Any) -> Any:
    """A normalised field value as stored in its column."""
    if field == "resources":
        return _maybe_json(value)
    if field in TUPLE_FIELDS:
        return json_text(value)
    if isinstance(value, datetime):
        return micros(value)
    return value


def token_row(r: TokenRecord) -> tuple[Any, ...]:
    """The tokens-table row of a (normalised) record, in :data:`COLUMNS` order."""
    return (
        r.id, r.user_id, r.name, r.description, json_text(r.scopes), r.hash,
        micros(r.created_at), maybe_micros(r.expires_at), maybe_micros(r.last_used_at),
        json_text(r.last_used_ips), maybe_micros(r.revoked_at), r.family_id, r.rotated_from,
        json_text(r.allowed_cidrs), _maybe_json(r.resources),
    )  # fmt: skip


def token_record(values: tuple[Any, ...]) -> TokenRecord:
    """The record of a tokens-table row read in :data:`COLUMNS` order."""
    (id_, user_id, name, description, scopes, hash_, created_at, expires_at,
     last_used_at, last_used_ips, revoked_at, family_id, rotated_from, cidrs, resources) = values  # fmt: skip
    return TokenRecord(
        id=id_, user_id=user_id, name=name, description=description,
        scopes=json_tuple(scopes), hash=hash_, created_at=from_micros(created_at),
        expires_at=_datetime(expires_at), last_used_at=_datetime(last_used_at),
        last_used_ips=json_tuple(last_used_ips), revoked_at=_datetime(revoked_at),
        family_id=family_id, rotated_from=rotated_from, allowed_cidrs=json_tuple(cidrs),
        resources=None if resources is None else json_tuple(resources),
    )  # fmt: skip


def log_row(e: LogEntry) -> tuple[Any, ...]:
    """The log-table row of an entry, in :data:`LOG_COLUMNS` order."""
    details = json.dumps(e.details, separators=(",", ":"), ensure_ascii=False)
    return (e.id, micros(e.at), e.kind, e.token_id, e.user_id, e.actor, e.client_ip, e.reason, details)


def log_entry(values: tuple[Any, ...]) -> LogEntry:
    """The entry of a log-table row read in :data:`LOG_COLUMNS` order."""
    id_, at, kind, token_id, user_id, actor, client_ip, reason, details = values
    return LogEntry(id_, from_micros(at), kind, token_id, user_id, actor, client_ip, reason, json.loads(details))
