"""The store contract's administration part: ``search``, the security log
(``append_log``, ``read_log``, ``prune_log``) and ``claim_notice``.

:class:`StoreContract` inherits :class:`OversightContract`, so every store's
test module runs these. ``search`` answers are compared with
:func:`pat_middleware.core.query.answer` (the rule written once, scanning)
over the same records, for each filter alone, combinations, each sort order
and every page.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pat_middleware.core.audit import LogEntry, LogQuery, entry_id
from pat_middleware.core.models import TokenRecord
from pat_middleware.core.query import TokenQuery, answer
from pat_middleware.stores.base import Store

__all__ = ["OversightContract"]

T0 = datetime(2031, 3, 14, 15, 9, 26, 535897, tzinfo=UTC)
NOW = T0 + timedelta(days=40)
DAY = timedelta(days=1)


def _record(n: int, **fields: Any) -> TokenRecord:
    values: dict[str, Any] = {
        "id": f"Q{n:011d}",
        "user_id": ["alice", "bob", "carol"][n % 3],
        "name": f"token-{n}",
        "hash": f"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${n:022d}",
        "created_at": T0 + timedelta(days=n % 30, microseconds=n),
    }
    values.update(fields)
    return TokenRecord(**values)


def _population() -> list[TokenRecord]:
    """Sixty records covering each state, scope, name and date case; some share a
    creation moment (ties broken by id)."""
    scopes = [("repo:read",), ("repo:write",), ("repo:*",), ("admin:org", "repo:write"), (), ("read_100%",)]
    names = ["Deploy", "deploy-ci", "CI_bot", "laptop", "50%_off", "back\\slash"]
    records = []
    for n in range(60):
        fields: dict[str, Any] = {"scopes": scopes[n % 6], "name": f"{names[n % 6]} {n}"}
        if n % 4 == 0:
            fields["last_used_at"] = T0 + timedelta(days=(n * 7) % 40, seconds=n)
        if n % 5 == 0:
            fields["expires_at"] = NOW + timedelta(days=(n % 15) - 5)  # some expired, some soon
        if n % 7 == 0:
            fields["revoked_at"] = NOW - DAY
        if n % 11 == 0:
            fields["revoked_at"] = NOW + DAY  # rotated, in its grace
        if n in (50, 51, 52):
            fields["created_at"] = T0 + timedelta(days=3)  # one moment, three ids
        records.append(_record(n, **fields))
    return records


QUERIES: list[dict[str, Any]] = [
    {},
    {"state": "active"},
    {"state": "inactive"},
    {"state": "rotated"},
    {"state": "expired"},
    {"state": "revoked"},
    {"state": "active", "unused_after": timedelta(days=20)},
    {"state": "inactive", "unused_after": timedelta(days=20)},
    {"user_id": "bob"},
    {"user_id": "nobody"},
    {"scopes_any": ("repo:write",)},
    {"scopes_any": ("repo:write", "repo:*")},
    {"scopes_any": ("read_100%",)},
    {"scopes_any": ("read_1000",)},
    {"name_contains": "deploy"},
    {"name_contains": "ci_"},
    {"name_contains": "50%"},
    {"name_contains": "_"},
    {"name_contains": "k\\s"},
    {"created_after": T0 + timedelta(days=3)},
    {"created_before": T0 + timedelta(days=3)},
    {"last_used_after": T0 + timedelta(days=10)},
    {"last_used_before": T0 + timedelta(days=10)},
    {"unused_since": T0 + timedelta(days=10)},
    {"expires_before": NOW + timedelta(days=3)},
    {"state": "active", "scopes_any": ("repo:write",), "created_before": T0 + timedelta(days=20)},
    {"user_id": "alice", "state": "active", "expires_before": NOW + timedelta(days=7), "name_contains": "e"},
]
SORTS = ("created_at", "-created_at", "last_used_at", "-last_used_at")


class OversightContract:
    """Administration queries, the security log and notices: every store answers alike."""

    @pytest.fixture
    def population(self, store: Store) -> list[TokenRecord]:
        records = _population()
        for record in records:
            store.insert(record)
        return [store.get(r.id) or r for r in records]

    @pytest.mark.parametrize("criteria", QUERIES, ids=lambda c: ",".join(c) or "all")
    def test_search_answers_each_filter_as_the_rule_does(
        self, store: Store, population: list[TokenRecord], criteria: dict[str, Any]
    ) -> None:
        for sort in SORTS:
            query = TokenQuery(now=NOW, sort=sort, limit=1000, **criteria)  # type: ignore[arg-type]
            expected = [r.id for r in answer(population, query)]
            assert [r.id for r in store.search(query)] == expected, (criteria, sort)

    @pytest.mark.parametrize("sort", SORTS)
    def test_search_pages_follow_the_cursor_without_gaps_or_repeats(
        self, store: Store, population: list[TokenRecord], sort: Any
    ) -> None:
        query = TokenQuery(now=NOW, sort=sort, limit=7)
        seen: list[str] = []
        while True:
            page = store.search(query)
            assert len(page) <= 7
            seen.extend(r.id for r in page)
            if len(page) < 7:
                break
            last = page[-1]
            moment = last.created_at if sort.endswith("created_at") else last.last_activity
            query = replace(query, after=(moment, last.id))
        assert seen == [r.id for r in answer(population, replace(query, after=None, limit=1000))]
        assert len(seen) == len(set(seen)) == len(population)

    def test_search_returns_whole_records(self, store: Store, population: list[TokenRecord]) -> None:
        by_id = {r.id: r for r in population}
        for record in store.search(TokenQuery(now=NOW, limit=1000)):
            assert record == by_id[record.id]
            assert record.created_at.tzinfo is not None

    def test_search_on_an_empty_store_is_empty(self, store: Store) -> None:
        assert store.search(TokenQuery(now=NOW, state="active", scopes_any=("x",))) == []

    # -- the security log ----------------------------------------------------

    @staticmethod
    def _entries() -> list[LogEntry]:
        kinds = ["created", "renamed", "revoked", "new_address", "throttled", "admin_action"]
        entries = []
        for n in range(30):
            at = T0 + timedelta(minutes=n)
            entries.append(
                LogEntry(
                    entry_id(at),
                    at,
                    kinds[n % 6],
                    f"Q{n % 5:011d}",
                    ["alice", "bob", "ünïcode"][n % 3],
                    "admin:root" if n % 6 == 5 else None,
                    "2001:db8::1" if n % 2 else "10.0.0.1",
                    "admin" if n % 6 == 2 else None,
                    {"n": n, "nested": {"list": [1, "two"]}, "text": "é 🚀"},
                )
            )
        return entries

    def test_log_entries_come_back_newest_first_whole(self, store: Store) -> None:
        entries = self._entries()
        store.append_log(entries[:10])
        store.append_log(entries[10:])
        got = store.read_log(LogQuery(limit=1000))
        assert got == sorted(entries, key=lambda e: e.id, reverse=True)
        assert all(e.at.tzinfo is not None for e in got)

    def test_log_filters_and_cursor(self, store: Store) -> None:
        entries = self._entries()
        store.append_log(entries)
        newest_first = sorted(entries, key=lambda e: e.id, reverse=True)
        cases: list[dict[str, Any]] = [
            {"user_id": "bob"},
            {"token_id": "Q00000000002"},
            {"kinds": ("revoked", "admin_action")},
            {"since": T0 + timedelta(minutes=10)},
            {"until": T0 + timedelta(minutes=10)},
            {"before": newest_first[5].id},
            {"user_id": "ünïcode", "kinds": ("created", "new_address"), "since": T0 + timedelta(minutes=3)},
        ]
        for case in cases:
            query = LogQuery(limit=1000, **case)
            expected = [
                e
                for e in newest_first
                if (query.user_id is None or e.user_id == query.user_id)
                and (query.token_id is None or e.token_id == query.token_id)
                and (query.kinds is None or e.kind in query.kinds)
                and (query.since is None or e.at >= query.since)
                and (query.until is None or e.at < query.until)
                and (query.before is None or e.id < query.before)
            ]
            assert store.read_log(query) == expected, case
        assert store.read_log(LogQuery(limit=4)) == newest_first[:4]

    def test_log_ignores_an_id_it_has(self, store: Store) -> None:
        entry = self._entries()[0]
        store.append_log([entry])
        store.append_log([entry, replace(entry, kind="renamed")])
        assert store.read_log(LogQuery()) == [entry]

    def test_prune_log_deletes_older_entries_only(self, store: Store) -> None:
        entries = self._entries()
        store.append_log(entries)
        assert store.prune_log(T0 + timedelta(minutes=12)) == 12
        assert store.read_log(LogQuery(limit=1000)) == sorted(entries[12:], key=lambda e: e.id, reverse=True)
        assert store.prune_log(T0) == 0

    # -- notices -------------------------------------------------------------

    def test_claim_notice_once_per_key(self, store: Store) -> None:
        until = T0 + timedelta(days=7)
        assert store.claim_notice("Q00000000001", "expiring/604800/x", until) is True
        assert store.claim_notice("Q00000000001", "expiring/604800/x", until) is False
        assert store.claim_notice("Q00000000001", "expiring/86400/x", until) is True
        assert store.claim_notice("Q00000000002", "expiring/604800/x", until) is True
        store.prune_log(until - DAY)
        assert store.claim_notice("Q00000000001", "expiring/604800/x", until) is False
        store.prune_log(until + DAY)
        assert store.claim_notice("Q00000000001", "expiring/604800/x", until) is True

    def test_concurrent_claims_have_one_winner(self, store: Store) -> None:
        until = T0 + timedelta(days=7)
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: store.claim_notice("Q00000000009", "k", until), range(16)))
        assert results.count(True) == 1

    # -- touch tells a new address ---------------------------------------------

    def test_touch_says_whether_the_address_is_new(self, store: Store) -> None:
        record = _record(900)
        store.insert(record)
        assert store.touch(record.id, T0, "10.0.0.1", 5) is True
        assert store.touch(record.id, T0 + DAY, "10.0.0.1", 5) is False
        assert store.touch(record.id, T0 + DAY, "2001:db8::1", 5) is True
        assert store.touch(record.id, T0 + DAY, None, 5) is False
        assert store.touch("Q99999999999", T0, "10.0.0.9", 5) is False
        assert store.touch(record.id, T0 + DAY, "10.0.0.3", 1) is True  # keeps only this one now
        assert store.touch(record.id, T0 + DAY, "10.0.0.1", 1) is True  # fell out: new again
        assert store.get(record.id).last_used_ips == ("10.0.0.1",)  # type: ignore[union-attr]
