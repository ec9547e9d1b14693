"""Administration questions as SQL, written once for both SQL stores.

:func:`search_sql` is :func:`~pat_middleware.core.query.matches`,
:func:`~pat_middleware.core.query.after_cursor` and
:func:`~pat_middleware.core.query.sort_value` translated to a ``WHERE`` and an
``ORDER BY`` over the tokens table; :func:`log_sql` is
:func:`~pat_middleware.core.audit.log_matches` over the log table. Both use
named parameters (``:name``), which :mod:`sqlite3` and SQLAlchemy's ``text()``
both take; a :class:`Flavour` says what differs between databases, and the
caller's ``moment`` turns a datetime into what its timestamp columns hold.

Indexes these are written for (see the stores' schemas): ``(created_at, id)``
and ``(COALESCE(last_used_at, created_at), id)`` give every sort order and
cursor a range scan; ``user_id`` and ``expires_at`` have their own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pat_middleware.core.audit import LogQuery
from pat_middleware.core.query import TokenQuery

__all__ = ["ACTIVITY", "POSTGRESQL", "SQLITE", "Clause", "Flavour", "like_pattern", "log_sql", "search_sql"]

#: A token's activity (its last use, else its creation): the expression the activity index is on.
ACTIVITY = "COALESCE(last_used_at, created_at)"
#: The LIKE escape character: ``!`` needs no escaping in any dialect's string literals.
_ESCAPE = "!"


def like_pattern(text: str, escape: str = _ESCAPE) -> str:
    """``%text%`` with LIKE's wildcards (and the escape character) in ``text`` escaped."""
    for char in (escape, "%", "_"):
        text = text.replace(char, escape + char)
    return f"%{text}%"


@dataclass(frozen=True, slots=True)
class Flavour:
    """What differs between databases.

    * ``id_key``: the id as ordered (``id COLLATE "C"`` on PostgreSQL: byte order,
      as the other stores sort ids, whatever the database's collation);
    * ``scopes``: how "holds one of these scopes" is asked of the JSON array
      ``scopes``: ``instr`` (SQLite: a case-sensitive substring test for the
      JSON string ``"scope"``), ``jsonb`` (PostgreSQL: ``?|``, which the GIN
      index answers) or ``like`` (elsewhere: LIKE on the JSON text, wildcards escaped);
    * ``name``: ``instr`` (SQLite), ``like`` or ``like_backslash`` (PostgreSQL: LIKE's
      own escape character, so a trigram index can read the pattern) for the
      case-insensitive substring.
    """

    id_key: str = "id"
    scopes: Literal["instr", "jsonb", "like"] = "like"
    name: Literal["instr", "like", "like_backslash"] = "like"


#: SQLite: instr() substring tests (LIKE would ignore ASCII case, which scopes must not);
#: lower() folds ASCII case only.
SQLITE = Flavour(scopes="instr", name="instr")
#: PostgreSQL: ids in byte order, scopes through jsonb ?| (a GIN index), LIKE for names.
POSTGRESQL = Flavour(id_key='id COLLATE "C"', scopes="jsonb", name="like_backslash")


@dataclass(slots=True)
class Clause:
    """A ``WHERE`` (conditions joined by AND), an ``ORDER BY`` and their parameters."""

    moment: Callable[[datetime], Any]
    conditions: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    order: str = ""

    @property
    def where(self) -> str:
        """The conditions joined by AND (``1 = 1`` when there are none)."""
        return " AND ".join(self.conditions) or "1 = 1"

    def bind(self, name: str, value: Any) -> str:
        """Keep ``value`` (a datetime through ``moment``) as parameter ``name``; ``:name``."""
        self.params[name] = self.moment(value) if isinstance(value, datetime) else value
        return f":{name}"

    def any_of(self, prefix: str, values: tuple[str, ...], condition: Callable[[str], str]) -> None:
        """One condition: ``condition(:prefixN)`` for some value (never true for no values)."""
        tests = [condition(self.bind(f"{prefix}{n}", value)) for n, value in enumerate(values)]
        self.conditions.append(f"({' OR '.join(tests)})" if tests else "1 = 0")


def _state(clause: Clause, query: TokenQuery) -> None:
    """The state filter at ``query.now`` (see ``TokenRecord.state`` and ``in_state``)."""
    if query.state == "all":
        return
    now = clause.bind("now", query.now)
    revoked, live_at_now = f"revoked_at <= {now}", f"(revoked_at IS NULL OR revoked_at > {now})"
    expired, unexpired = f"expires_at <= {now}", f"(expires_at IS NULL OR expires_at > {now})"
    cutoff = query.unused_cutoff
    idle = used = None
    if cutoff is not None:
        at = clause.bind("cutoff", cutoff)
        idle, used = f"{ACTIVITY} <= {at}", f"{ACTIVITY} > {at}"
    found: dict[str, list[str | None]] = {
        "active": [live_at_now, unexpired, used],
        "rotated": [f"revoked_at > {now}", unexpired, used],
        "expired": [live_at_now, expired],
        "revoked": [revoked],
        # NULL comparisons are not true: a valid token makes every alternative false or NULL.
        "inactive": ["(" + " OR ".join(c for c in (revoked, expired, idle) if c is not None) + ")"],
    }
    clause.conditions += [c for c in found[query.state] if c is not None]


def search_sql(query: TokenQuery, flavour: Flavour, moment: Callable[[datetime], Any]) -> Clause:
    """``query`` as a ``WHERE``/``ORDER BY`` over the tokens table (the ``LIMIT`` is the caller's)."""
    clause = Clause(moment)
    bind, conditions = clause.bind, clause.conditions
    if query.user_id is not None:
        conditions.append(f"user_id = {bind('user_id', query.user_id)}")
    _state(clause, query)
    if query.scopes_any is not None:
        needles = tuple(json.dumps(s) for s in query.scopes_any)  # as the JSON array holds it: "scope"
        if flavour.scopes == "jsonb":
            listed = ", ".join(f"CAST({bind(f'scope{n}', s)} AS text)" for n, s in enumerate(query.scopes_any))
            conditions.append(f"CAST(scopes AS jsonb) ?| ARRAY[{listed}]" if listed else "1 = 0")
        elif flavour.scopes == "instr":
            clause.any_of("scope", needles, lambda p: f"instr(scopes, {p}) > 0")
        else:
            patterns = tuple(like_pattern(n) for n in needles)
            clause.any_of("scope", patterns, lambda p: f"scopes LIKE {p} ESCAPE '{_ESCAPE}'")
    if query.name_contains is not None:
        needle = query.name_contains.lower()
        if flavour.name == "instr":
            conditions.append(f"instr(lower(name), {bind('name', needle)}) > 0")
        elif flavour.name == "like_backslash":
            conditions.append(f"lower(name) LIKE {bind('name', like_pattern(needle, chr(92)))}")
        else:
            conditions.append(f"lower(name) LIKE {bind('name', like_pattern(needle))} ESCAPE '{_ESCAPE}'")
    for name, test in (
        ("created_after", "created_at >"),
        ("created_before", "created_at <"),
        ("last_used_after", "last_used_at >"),
        ("last_used_before", "last_used_at <"),
        ("unused_since", f"{ACTIVITY} <="),
        ("expires_before", "expires_at <="),
    ):
        value = getattr(query, name)
        if value is not None:
            conditions.append(f"{test} {bind(name, value)}")
    if query.expires_before is not None and query.state in ("active", "rotated"):
        # implied (an expiry, not past): says which range of the expires_at index to read
        conditions.append(f"expires_at > {bind('now', query.now)}")
    column = "created_at" if query.sort.endswith("created_at") else ACTIVITY
    descending = query.sort.startswith("-")
    if query.after is not None:
        # (column, id) after the cursor, spelt so the first test bounds an index range
        # (SQLite does not range-scan an expression index on a row-value comparison).
        moment_, last_id = query.after
        at, last, beyond = bind("after_at", moment_), bind("after_id", last_id), "<" if descending else ">"
        conditions.append(f"{column} {beyond}= {at}")
        conditions.append(f"({column} {beyond} {at} OR {flavour.id_key} {beyond} {last})")
    way = " DESC" if descending else ""
    clause.order = f"{column}{way}, {flavour.id_key}{way}"
    return clause


def log_sql(query: LogQuery, moment: Callable[[datetime], Any]) -> Clause:
    """``query`` as a ``WHERE`` over the log table, newest (highest id) first."""
    clause = Clause(moment, order="id DESC")
    bind, conditions = clause.bind, clause.conditions
    for name, test in (
        ("user_id", "user_id ="),
        ("token_id", "token_id ="),
        ("since", "at >="),
        ("until", "at <"),
        ("before", "id <"),
    ):
        value = getattr(query, name)
        if value is not None:
            conditions.append(f"{test} {bind(name, value)}")
    if query.kinds is not None:
        clause.any_of("kind", query.kinds, lambda p: f"kind = {p}")
    return clause
