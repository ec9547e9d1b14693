"""Questions across every user's tokens (administration): :class:`TokenQuery`,
the rule each store answers it by (:func:`matches`, :func:`sort_value`), and
the page cursor.

A query is plain data, so each store can answer it its own way (an indexed
SQL query, a scan of a dict) and :func:`matches` is the one statement of
what every answer must be. ``tests/store_contract.py`` checks each store
against it.

Terms:

* a record's *activity* is its last recorded use, or its creation when it
  was never used (:attr:`~pat_middleware.core.models.TokenRecord.last_activity`);
* the *state* filters are those of ``manager.list`` (:data:`StateFilter`),
  judged at ``now`` with ``unused_after`` (``Policy.revoke_unused_after``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, get_args

from pat_middleware.core.models import TokenRecord, utc
from pat_middleware.core.scopes import ScopeRules, validate_scope
from pat_middleware.errors import PolicyViolation

__all__ = [
    "MAX_PAGE",
    "SORTS",
    "STATE_FILTERS",
    "SortKey",
    "StateFilter",
    "TokenPage",
    "TokenQuery",
    "after_cursor",
    "answer",
    "decode_cursor",
    "encode_cursor",
    "granting",
    "in_state",
    "matches",
    "sort_value",
]

#: ``active``: every token that can authenticate (``rotated`` ones in their grace too);
#: ``inactive``: every one that cannot (``inactive``, ``expired`` or ``revoked``).
StateFilter = Literal["active", "rotated", "inactive", "expired", "revoked", "all"]
STATE_FILTERS: tuple[str, ...] = get_args(StateFilter)
#: ``created_at``: by creation; ``last_used_at``: by activity (last use, else creation);
#: ``-`` for newest first. Ties are broken by id, in the same direction.
SortKey = Literal["created_at", "-created_at", "last_used_at", "-last_used_at"]
SORTS: tuple[str, ...] = get_args(SortKey)
#: The largest page a store is asked for.
MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class TokenQuery:
    """Which tokens, in which order, from where: every field but ``now`` is optional.

    * ``state`` (at ``now``, with ``unused_after``): see :data:`StateFilter`;
    * ``user_id``: exactly that user's;
    * ``scopes_any``: tokens holding at least one of these *stored* scopes
      (:func:`granting` turns "can act with scope S" into that list);
    * ``name_contains``: case-insensitive substring of the name (ASCII case
      only on SQLite);
    * ``created_after``/``created_before``: strictly after / before;
    * ``last_used_after``/``last_used_before``: a recorded use strictly
      after / before (never-used tokens match neither);
    * ``unused_since``: activity at or before this moment ("unused for at
      least N days" is ``now - N days``);
    * ``expires_before``: an expiry at or before this moment;
    * ``after``: the cursor, ``(sort value, id)`` of the last record of the
      previous page; only records strictly after it in ``sort`` order;
    * ``limit``: at most this many records.
    """

    now: datetime
    state: StateFilter = "all"
    unused_after: timedelta | None = None
    user_id: str | None = None
    scopes_any: tuple[str, ...] | None = None
    name_contains: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    last_used_after: datetime | None = None
    last_used_before: datetime | None = None
    unused_since: datetime | None = None
    expires_before: datetime | None = None
    sort: SortKey = "-created_at"
    after: tuple[datetime, str] | None = None
    limit: int = 100

    def __post_init__(self) -> None:
        if self.state not in STATE_FILTERS:
            raise PolicyViolation(f"state must be one of {', '.join(STATE_FILTERS)}", "state")
        if self.sort not in SORTS:
            raise PolicyViolation(f"sort must be one of {', '.join(SORTS)}", "sort")
        if not isinstance(self.limit, int) or not 1 <= self.limit <= MAX_PAGE + 1:
            raise PolicyViolation(f"limit must be between 1 and {MAX_PAGE}", "limit")
        for name in ("now", "created_after", "created_before", "last_used_after", "last_used_before",
                     "unused_since", "expires_before"):  # fmt: skip
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, utc(value))
        if self.after is not None:
            object.__setattr__(self, "after", (utc(self.after[0]), self.after[1]))

    @property
    def unused_cutoff(self) -> datetime | None:
        """Activity at or before this is ``inactive`` (``None``: no inactivity policy)."""
        return None if self.unused_after is None else self.now - self.unused_after


@dataclass(frozen=True, slots=True)
class TokenPage:
    """One page of an administration listing; ``cursor`` fetches the next (``None``: last page)."""

    records: list[TokenRecord]
    cursor: str | None = None


def matches(record: TokenRecord, query: TokenQuery) -> bool:
    """Whether ``record`` answers ``query`` (the paging cursor aside): the one
    statement of each filter, which every store's answer must agree with."""
    if query.user_id is not None and record.user_id != query.user_id:
        return False
    if query.state != "all" and not in_state(record, query.state, query.now, query.unused_after):
        return False
    if query.scopes_any is not None and not set(query.scopes_any).intersection(record.scopes):
        return False
    if query.name_contains is not None and query.name_contains.lower() not in record.name.lower():
        return False
    created, used = record.created_at, record.last_used_at
    if query.created_after is not None and not created > query.created_after:
        return False
    if query.created_before is not None and not created < query.created_before:
        return False
    if query.last_used_after is not None and (used is None or not used > query.last_used_after):
        return False
    if query.last_used_before is not None and (used is None or not used < query.last_used_before):
        return False
    if query.unused_since is not None and not record.last_activity <= query.unused_since:
        return False
    expires = record.expires_at
    return query.expires_before is None or (expires is not None and expires <= query.expires_before)


def in_state(record: TokenRecord, state: StateFilter, now: datetime, unused_after: timedelta | None) -> bool:
    """Whether ``record`` passes the state filter ``state`` at ``now``."""
    actual = record.state(now, unused_after)
    if state == "all":
        return True
    if state == "active":
        return actual in ("active", "rotated")
    if state == "inactive":
        return actual not in ("active", "rotated")
    return actual == state


def sort_value(record: TokenRecord, sort: SortKey) -> tuple[datetime, str]:
    """The key ``sort`` orders records by (ascending; ``-`` sorts reverse it)."""
    moment = record.created_at if sort.endswith("created_at") else record.last_activity
    return (moment, record.id)


def after_cursor(record: TokenRecord, query: TokenQuery) -> bool:
    """Whether ``record`` comes strictly after the query's cursor in its order."""
    if query.after is None:
        return True
    key = sort_value(record, query.sort)
    return key < query.after if query.sort.startswith("-") else key > query.after


def answer(records: Iterable[TokenRecord], query: TokenQuery) -> list[TokenRecord]:
    """The answer to ``query`` over ``records`` by scanning them all: what a store
    without indexes returns (the memory and Redis stores), and the reference the
    store contract compares indexed answers with."""
    hits = [r for r in records if matches(r, query) and after_cursor(r, query)]
    hits.sort(key=lambda r: sort_value(r, query.sort), reverse=query.sort.startswith("-"))
    return hits[: query.limit]


def encode_cursor(record: TokenRecord, sort: SortKey) -> str:
    """The opaque cursor that continues after ``record`` in ``sort`` order."""
    moment, token_id = sort_value(record, sort)
    raw = json.dumps([sort, moment.isoformat(), token_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: SortKey) -> tuple[datetime, str]:
    """``(sort value, id)`` from a cursor of :func:`encode_cursor`; ``PolicyViolation``
    naming ``cursor`` for anything else (or a cursor of another sort order)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        cursor_sort, moment, token_id = json.loads(raw)
        if cursor_sort != sort or not isinstance(token_id, str) or not isinstance(moment, str):
            raise ValueError("cursor of another listing")
        return utc(datetime.fromisoformat(moment)), token_id
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise PolicyViolation("the cursor is not one this listing gave (or its sort differs)", "cursor") from None


def granting(scope: str, rules: ScopeRules | None = None) -> tuple[str, ...]:
    """The stored scopes that grant ``scope``: itself, the wildcards above it
    (``repo:*`` for ``repo:write``) and every scope whose implication rules
    reach it. A token "with scope S", for an administrator, is a token holding
    one of these: what could act with S."""
    validate_scope(scope)
    parts = scope.split(":")
    found = {scope, *(":".join(parts[:i]) + ":*" for i in range(1, len(parts)))}
    if rules is not None:
        for granted in rules.implies:
            expanded = rules.expand((granted,))
            if scope in expanded or any(s in expanded for s in found):
                found.add(granted)
    return tuple(sorted(found))
