"""Oversight as flows: what administrators do across every user's tokens
(search, revoke by filter), the inactivity sweep, expiry notices and reading
the security log. :class:`~pat_middleware.core.manager.ManagerFlows` inherits
these, so ``auth.manager`` and ``auth.async_manager`` have them all.

Who may call them is the edge's business (the admin mounts check
``is_admin`` or an admin scope); the flows take an ``actor`` for the log.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any

from pat_middleware.core.audit import LogEntry, LogPage, LogQuery, log_matches
from pat_middleware.core.durations import parse_duration, parse_moment
from pat_middleware.core.events import Event, EventKind, emit
from pat_middleware.core.flow import Flow
from pat_middleware.core.models import TokenRecord, from_timestamp, utc
from pat_middleware.core.policy import Policy, check_user_id
from pat_middleware.core.query import (
    MAX_PAGE,
    STATE_FILTERS,
    SortKey,
    StateFilter,
    TokenPage,
    TokenQuery,
    decode_cursor,
    encode_cursor,
    granting,
)
from pat_middleware.core.scopes import validate_scope
from pat_middleware.core.verifier import Verifier
from pat_middleware.errors import PolicyViolation
from pat_middleware.stores.base import Store

__all__ = ["MAX_NAME_FILTER", "OversightFlows", "RevokeReport", "TokenFilter"]

MAX_NAME_FILTER = 100


@dataclass(frozen=True, slots=True)
class TokenFilter:
    """Which tokens, across users, in an administrator's words. Every field is optional.

    ``scope``: tokens that could act with it (holding it, a wildcard above it,
    or a scope implying it); ``unused_for``: no recorded use (or, never used,
    no creation) for at least this long; ``expiring_within``: an expiry within
    this long from now (already expired ones included unless ``state`` says
    otherwise). The others as :class:`~pat_middleware.core.query.TokenQuery`.
    """

    state: StateFilter = "all"
    user_id: str | None = None
    scope: str | None = None
    name_contains: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    last_used_after: datetime | None = None
    last_used_before: datetime | None = None
    unused_for: timedelta | None = None
    expiring_within: timedelta | None = None

    def __post_init__(self) -> None:
        if self.user_id is not None:
            check_user_id(self.user_id)
        if self.scope is not None:
            try:
                validate_scope(self.scope)
            except ValueError as exc:
                raise PolicyViolation(str(exc), "scope") from None
        if self.name_contains is not None and (
            not isinstance(self.name_contains, str) or not 1 <= len(self.name_contains) <= MAX_NAME_FILTER
        ):
            raise PolicyViolation(f"name_contains must be 1 to {MAX_NAME_FILTER} characters", "name_contains")
        for name in ("unused_for", "expiring_within"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, timedelta) or value < timedelta(0)):
                raise PolicyViolation(f"{name} must be a duration of zero or more", name)
        for name in ("created_after", "created_before", "last_used_after", "last_used_before"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, datetime):
                    raise PolicyViolation(f"{name} must be a date and time", name)
                object.__setattr__(self, name, utc(value))

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> TokenFilter:
        """A filter from text parameters (an API query string): the field names, with
        ``unused_for`` and ``expiring_within`` as durations (``90d``, ``12h``) and
        the dates as ISO 8601. ``PolicyViolation`` naming the parameter for a bad
        value or an unknown name."""
        values: dict[str, Any] = {}
        for name, text in params.items():
            if name not in _FIELD_NAMES:
                raise PolicyViolation(f"unknown filter {name!r}", name)
            try:
                if name in ("unused_for", "expiring_within"):
                    values[name] = parse_duration(text)
                elif name.endswith(("_after", "_before")):
                    values[name] = parse_moment(text)
                else:
                    values[name] = text
            except ValueError as exc:
                raise PolicyViolation(str(exc), name) from None
        if "state" in values and values["state"] not in STATE_FILTERS:
            raise PolicyViolation(f"state must be one of {', '.join(STATE_FILTERS)}", "state")
        return cls(**values)

    @property
    def criteria(self) -> dict[str, Any]:
        """The fields given, JSON-ready (for the log and reports)."""
        result: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or (f.name == "state" and value == "all"):
                continue
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, timedelta):
                value = value.total_seconds()
            result[f.name] = value
        return result


@dataclass(frozen=True, slots=True)
class RevokeReport:
    """What a revoke by filter did (or, with ``dry_run``, would do): the ids of the
    tokens that matched and were not revoked yet."""

    ids: list[str]
    dry_run: bool
    criteria: dict[str, Any]

    @property
    def count(self) -> int:
        return len(self.ids)


_FIELD_NAMES = frozenset(f.name for f in fields(TokenFilter))


def _check_limit(limit: object) -> None:
    if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise PolicyViolation(f"limit must be between 1 and {MAX_PAGE}", "limit")


def _shift(moment: datetime, delta: timedelta, name: str) -> datetime:
    try:
        return moment + delta
    except OverflowError:
        raise PolicyViolation(f"{name} is out of range", name) from None


class OversightFlows:
    """Administration, sweeping, notices and the log, as flows (mixed into ``ManagerFlows``)."""

    verifier: Verifier
    policy: Policy
    #: This process's security-log entries not written yet (set by ``PATAuth``).
    pending_log: Callable[[], builtins.list[LogEntry]] | None = None

    def _clock(self) -> datetime:
        return from_timestamp(self.verifier.clock())

    def _query(self, selection: TokenFilter, now: datetime, **paging: Any) -> TokenQuery:
        unused = selection.unused_for
        expiring = selection.expiring_within
        return TokenQuery(
            now=now,
            state=selection.state,
            unused_after=self.policy.revoke_unused_after,
            user_id=selection.user_id,
            scopes_any=None if selection.scope is None else granting(selection.scope, self.verifier.scope_rules),
            name_contains=selection.name_contains,
            created_after=selection.created_after,
            created_before=selection.created_before,
            last_used_after=selection.last_used_after,
            last_used_before=selection.last_used_before,
            unused_since=None if unused is None else _shift(now, -unused, "unused_for"),
            expires_before=None if expiring is None else _shift(now, expiring, "expiring_within"),
            **paging,
        )

    def search(
        self,
        selection: TokenFilter | None = None,
        *,
        sort: SortKey = "-created_at",
        cursor: str | None = None,
        limit: int = 100,
    ) -> Flow[TokenPage]:
        """One page of every user's tokens that match ``selection``, in ``sort``
        order; the page's ``cursor`` continues the listing."""
        _check_limit(limit)
        after = None if cursor is None else decode_cursor(cursor, sort)
        query = self._query(selection or TokenFilter(), self._clock(), sort=sort, after=after, limit=limit + 1)
        records = yield from self.verifier.store_call(Store.search, query)
        if len(records) <= limit:
            return TokenPage(records, None)
        return TokenPage(records[:limit], encode_cursor(records[limit - 1], sort))

    def _all_matching(self, query: TokenQuery) -> Flow[builtins.list[TokenRecord]]:
        """Every record answering ``query`` (page after page, in creation order)."""
        found: builtins.list[TokenRecord] = []
        query = replace(query, sort="created_at", limit=MAX_PAGE)
        while True:
            page = yield from self.verifier.store_call(Store.search, query)
            found.extend(page)
            if len(page) < MAX_PAGE:
                return found
            last = page[-1]
            query = replace(query, after=(last.created_at, last.id))

    def revoke_matching(self, selection: TokenFilter, *, actor: str, dry_run: bool = False) -> Flow[RevokeReport]:
        """Revoke every not yet revoked token matching ``selection`` (incident
        response: "every token with scope ``repo:write`` created before T").
        With ``dry_run``, change nothing and report what would be revoked. At
        least one criterion is required. Logged as an ``admin_action``."""
        criteria = selection.criteria
        if not criteria:
            raise PolicyViolation("give at least one filter: revoking every token is not a filter", "filter")
        now = self._clock()
        records = yield from self._all_matching(self._query(selection, now))
        live = [r for r in records if r.state(now) != "revoked"]
        ids = [r.id for r in live]
        if not dry_run:
            yield from self._revoke_records(live, now, actor, "admin")
        self._admin_event(now, actor, "revoke_matching", criteria=criteria, count=len(ids), dry_run=dry_run)
        return RevokeReport(ids, dry_run, criteria)

    def _revoke_records(self, records: Iterable[TokenRecord], now: datetime, actor: str, reason: str) -> Flow[None]:
        """Revoke each record (with its predecessors), then invalidate them all; one
        ``revoked`` event per id that changed, naming the actor and reason."""
        changed: builtins.list[tuple[str, str]] = []
        for record in records:
            ids = yield from self.verifier.store_call(Store.revoke, record.id, now)
            changed.extend((token_id, record.user_id) for token_id in ids)
        yield from self.verifier.invalidate_flow([token_id for token_id, _ in changed])
        for token_id, user_id in changed:
            emit(self.verifier.on_event, Event("revoked", now, token_id, user_id, reason, actor=actor))

    def _admin_event(self, now: datetime, actor: str, action: str, **details: Any) -> None:
        kind: EventKind = "admin_action"
        emit(self.verifier.on_event, Event(kind, now, details={"action": action, **details}, actor=actor))

    def sweep(self, *, actor: str = "sweep", dry_run: bool = False) -> Flow[builtins.list[str]]:
        """Revoke every token in the ``inactive`` state (``Policy.revoke_unused_after``);
        return their ids. With ``dry_run``, only list them. ``actor`` (``admin:<id>``,
        ``cli:<user>``; ``sweep`` for a scheduled run) is logged with the revocations."""
        unused_after = self.policy.revoke_unused_after
        if unused_after is None:
            raise PolicyViolation("no inactivity policy: set Policy(revoke_unused_after=...)", "revoke_unused_after")
        now = self._clock()
        cutoff = _shift(now, -unused_after, "revoke_unused_after")
        query = TokenQuery(now=now, state="active", unused_since=cutoff)  # active but for inactivity
        records = yield from self._all_matching(query)
        if not dry_run:
            yield from self._revoke_records(records, now, actor, "inactive")
        self._admin_event(now, actor, "sweep", count=len(records), dry_run=dry_run)
        return [r.id for r in records]

    def claim_expiry_notices(self, within: timedelta) -> Flow[dict[str, builtins.list[TokenRecord]]]:
        """The active tokens expiring within ``within``, by owner, that no earlier
        call claimed for this window: each token at most once per window and
        expiry (remembered in the store, so concurrent or repeated runs do not
        send twice). ``manager.notify`` calls the host's hook with them."""
        if not isinstance(within, timedelta) or within <= timedelta(0):
            raise PolicyViolation("within must be a positive duration", "within")
        now = self._clock()
        end = _shift(now, within, "within")
        records = yield from self.verifier.store_call(Store.list_expiring, now, end)
        owners: dict[str, builtins.list[TokenRecord]] = {}
        unused_after = self.policy.revoke_unused_after
        for record in records:
            if record.expires_at is None or record.state(now, unused_after) != "active":
                continue  # rotated (its successor is the one to remind of), or inactive
            key = f"expiring/{int(within.total_seconds())}/{record.expires_at.isoformat()}"
            claimed = yield from self.verifier.store_call(Store.claim_notice, record.id, key, record.expires_at)
            if claimed:
                owners.setdefault(record.user_id, []).append(record)
        return owners

    def security_log(
        self,
        *,
        user_id: str | None = None,
        token_id: str | None = None,
        kinds: Iterable[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Flow[LogPage]:
        """One page of the security log, newest first (``user_id``: one owner's log)."""
        _check_limit(limit)
        if user_id is not None:
            check_user_id(user_id)
        query = LogQuery(
            user_id=user_id,
            token_id=token_id,
            kinds=None if kinds is None else tuple(kinds),
            since=since,
            until=until,
            before=cursor,
            limit=limit + 1,
        )
        entries: builtins.list[LogEntry] = yield from self.verifier.store_call(Store.read_log, query)
        if self.pending_log is not None:  # this process's latest entries, written or not
            mine = [e for e in self.pending_log() if log_matches(e, query)]
            if mine:
                merged = {e.id: e for e in (*entries, *mine)}
                entries = sorted(merged.values(), key=lambda e: e.id, reverse=True)[: query.limit]
        if len(entries) <= limit:
            return LogPage(entries, None)
        return LogPage(entries[:limit], entries[limit - 1].id)
