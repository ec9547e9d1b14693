"""The administration queries of :class:`~pat_middleware.django.store.DjangoStore` as ORM
filters: :class:`~pat_middleware.core.query.TokenQuery` (the rule is
:func:`~pat_middleware.core.query.matches`, :func:`~pat_middleware.core.query.sort_value`
and :func:`~pat_middleware.core.query.after_cursor`) and
:class:`~pat_middleware.core.audit.LogQuery` (:func:`~pat_middleware.core.audit.log_matches`).

* *activity* is ``COALESCE(last_used_at, created_at)``, indexed with ``id``
  (``pat_token_activity_id``) where the database has expression indexes;
* ``scopes_any``: ``scopes @> '["s"]'`` where Django has JSON containment
  (PostgreSQL, MySQL), else a case-sensitive search for ``"s"`` in the JSON text
  (``INSTR``; a scope holds no quote or backslash, so that is exact);
* ``name_contains``: ``icontains`` (``UPPER(name) LIKE UPPER(%s)``, its ``%``, ``_``
  and ``\\`` escaped by Django); on SQLite only ASCII letters fold;
* ties and cursors compare ids in byte order, as the other stores do, whatever
  the database's collation (``COLLATE "C"`` on PostgreSQL, ``utf8mb4_bin`` on MySQL).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.db.models import F, Q, QuerySet, TextField, Value
from django.db.models.functions import Cast, Coalesce, Collate, StrIndex

from pat_middleware.core.audit import LogEntry, LogQuery
from pat_middleware.core.models import utc
from pat_middleware.core.query import TokenQuery
from pat_middleware.core.scopes import validate_scope
from pat_middleware.django.models import SecurityLogEntry, Token
from pat_middleware.stores._common import entry_from_row

__all__ = ["LOG_FIELDS", "entry_columns", "log_entry", "log_search", "token_search"]

#: Byte-order collations, by Django vendor (the others compare ids in byte order already).
_BINARY_COLLATION = {"postgresql": "C", "mysql": "utf8mb4_bin"}
#: The log table's columns, as :class:`LogEntry` names them.
LOG_FIELDS = ("id", "at", "kind", "token_id", "user_id", "actor", "client_ip", "reason", "details")


def _state(query: TokenQuery) -> Q:
    """The state filter at ``query.now`` (see :func:`~pat_middleware.core.query.in_state`)."""
    now, cutoff = query.now, query.unused_cutoff
    revoked = Q(revoked_at__lte=now)
    expired = Q(expires_at__lte=now)
    not_revoked = Q(revoked_at__isnull=True) | Q(revoked_at__gt=now)
    not_expired = Q(expires_at__isnull=True) | Q(expires_at__gt=now)
    idle, used = (Q(activity__lte=cutoff), Q(activity__gt=cutoff)) if cutoff is not None else (Q(pk__in=[]), Q())
    if query.state == "active":  # can authenticate: active, or rotated in its grace
        return not_revoked & not_expired & used
    if query.state == "rotated":
        return not_revoked & not_expired & used & Q(revoked_at__isnull=False)
    if query.state == "inactive":  # cannot: revoked, expired or unused for too long
        return revoked | expired | idle
    if query.state == "expired":
        return not_revoked & expired
    if query.state == "revoked":
        return revoked
    return Q()


def _scopes(rows: QuerySet[Token], scopes: tuple[str, ...], containment: bool) -> tuple[QuerySet[Token], Q]:
    """Records holding one of ``scopes``: the rows (with any aliases it needs) and the filter.
    A string that is not a valid scope is held by no record (every stored scope is valid)."""
    found = Q(pk__in=[])
    text = Cast("scopes", output_field=TextField())
    for n, scope in enumerate(scopes):
        try:
            validate_scope(scope)
        except ValueError:
            continue
        if containment:
            found |= Q(scopes__contains=[scope])
        else:
            rows = rows.alias(**{f"scope_{n}": StrIndex(text, Value(f'"{scope}"'))})
            found |= Q(**{f"scope_{n}__gt": 0})
    return rows, found


def token_search(rows: QuerySet[Token], query: TokenQuery, vendor: str, json_containment: bool) -> QuerySet[Token]:
    """``rows`` narrowed to ``query``'s answer, in its order, after its cursor, at most ``limit``."""
    collation = _BINARY_COLLATION.get(vendor)
    rows = rows.alias(
        activity=Coalesce("last_used_at", "created_at"),
        ordered_id=Collate(F("id"), collation) if collation else F("id"),
    )
    where = _state(query)
    if query.user_id is not None:
        where &= Q(user_id=query.user_id)
    if query.scopes_any is not None:
        rows, holding = _scopes(rows, query.scopes_any, json_containment)
        where &= holding
    if query.name_contains is not None:
        where &= Q(name__icontains=query.name_contains)
    bounds: Mapping[str, datetime | None] = {
        "created_at__gt": query.created_after,
        "created_at__lt": query.created_before,
        "last_used_at__gt": query.last_used_after,
        "last_used_at__lt": query.last_used_before,
        "activity__lte": query.unused_since,
        "expires_at__lte": query.expires_before,
    }
    where &= Q(**{lookup: value for lookup, value in bounds.items() if value is not None})
    key = "created_at" if query.sort.endswith("created_at") else "activity"
    descending = query.sort.startswith("-")
    if query.after is not None:
        moment, last_id = query.after
        op = "lt" if descending else "gt"
        where &= Q(**{f"{key}__{op}": moment}) | Q(**{key: moment, f"ordered_id__{op}": last_id})
    order = (f"-{key}", "-ordered_id") if descending else (key, "ordered_id")
    return rows.filter(where).order_by(*order)[: query.limit]


def log_search(rows: QuerySet[SecurityLogEntry], query: LogQuery) -> QuerySet[SecurityLogEntry]:
    """``rows`` narrowed to ``query``'s answer, newest (highest id) first, at most ``limit``."""
    bounds: dict[str, Any] = {
        "user_id": query.user_id,
        "token_id": query.token_id,
        "kind__in": query.kinds,
        "at__gte": query.since,
        "at__lt": query.until,
        "id__lt": query.before,
    }
    where = Q(**{lookup: value for lookup, value in bounds.items() if value is not None})
    return rows.filter(where).order_by("-id")[: query.limit]


def entry_columns(entry: LogEntry) -> dict[str, Any]:
    """The row of ``entry``."""
    row = {field: getattr(entry, field) for field in LOG_FIELDS}
    return row | {"at": utc(entry.at), "details": dict(entry.details)}


#: The entry of a row (``values(*LOG_FIELDS)``).
log_entry = entry_from_row
