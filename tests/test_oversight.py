"""Oversight end to end through ``PATAuth``: the inactivity policy, administration
(search, revoke by filter), the sweep, expiry notices and the security log, on
every store (memory, SQLite, PostgreSQL through SQLAlchemy, Redis)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pat_middleware import PATAuth
from pat_middleware.core.audit import LogEntry, SecurityLog
from pat_middleware.core.events import Event
from pat_middleware.core.models import TokenRecord
from pat_middleware.core.oversight import TokenFilter
from pat_middleware.core.policy import Policy
from pat_middleware.core.scopes import ScopeRules
from pat_middleware.core.tokens import generate
from pat_middleware.errors import InvalidToken, PolicyViolation
from pat_middleware.stores import MemoryStore, SQLiteStore
from pat_middleware.stores.base import Store
from tests.helpers import FAST_ARGON2, FakeClock

DAY = timedelta(days=1)
StoreFactory = Callable[[], Store]


@pytest.fixture(params=["memory", "sqlite", "postgres", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Each store kind, on the real servers (a fresh table or key prefix per test)."""
    if request.param == "memory":
        yield MemoryStore
    elif request.param == "sqlite":
        yield lambda: SQLiteStore(tmp_path / "tokens.db")
    elif request.param == "postgres":
        from pat_middleware.stores.sqlalchemy import SQLAlchemyStore

        url = request.getfixturevalue("sqlalchemy_postgres_url")
        table = f"pat_oversight_{uuid.uuid4().hex[:8]}"

        def postgres() -> Store:
            store = SQLAlchemyStore(url, table_name=table)
            store.create_schema()
            return store

        yield postgres
        cleaner = SQLAlchemyStore(url, table_name=table)
        cleaner.drop_schema()
        cleaner.close()
    else:
        from pat_middleware.stores.redis import RedisStore

        url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
        yield lambda: RedisStore.from_url(url, prefix=prefix)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def build(make_store: StoreFactory, clock: FakeClock) -> Iterator[Callable[..., PATAuth]]:
    made: list[PATAuth] = []

    def build(**options: Any) -> PATAuth:
        options.setdefault(
            "policy", Policy(revoke_unused_after=timedelta(days=30), default_lifetime=timedelta(days=120))
        )
        auth = PATAuth(make_store(), hasher=FAST_ARGON2, clock=clock, revocation_poll=None, **options)
        made.append(auth)
        return auth

    yield build
    for auth in made:
        auth.close()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def log_of(auth: PATAuth, **query: Any) -> list[LogEntry]:
    assert auth.security_log is not None
    auth.security_log.flush(force=True)
    return auth.manager.security_log(limit=1000, **query).entries


# -- the inactivity policy ----------------------------------------------------


def test_a_token_unused_for_the_period_is_refused_as_inactive_and_listed_so(
    build: Callable[..., PATAuth], clock: FakeClock
) -> None:
    auth = build()
    new = auth.manager.create("alice", "ci")
    clock.advance(30 * DAY)
    with pytest.raises(InvalidToken) as refused:
        auth.verify(new.token)
    assert refused.value.reason == "inactive"
    assert [r.id for r in auth.manager.list("alice", "inactive")] == [new.record.id]
    assert auth.manager.list("alice", "active") == []
    record = auth.manager.get(new.record.id)
    assert record.state(clock.datetime, auth.policy.revoke_unused_after) == "inactive"
    assert record.public_dict(clock.datetime, auth.policy.revoke_unused_after)["state"] == "inactive"


def test_use_keeps_a_token_active(build: Callable[..., PATAuth], clock: FakeClock) -> None:
    auth = build()
    new = auth.manager.create("alice", "ci")
    clock.advance(20 * DAY)
    auth.verify(new.token, client_ip="10.0.0.1")
    wait_for(lambda: auth.store.get(new.record.id).last_used_at is not None, "the last-use write")  # type: ignore[union-attr]
    clock.advance(25 * DAY)  # 45 days after creation, 25 after the last use
    assert auth.verify(new.token, client_ip="10.0.0.1").token_id == new.record.id
    clock.advance(30 * DAY)
    with pytest.raises(InvalidToken, match="inactive"):
        auth.verify(new.token, client_ip="10.0.0.1")


def test_the_period_is_at_least_a_day() -> None:
    with pytest.raises(ValueError, match="at least 1 day"):
        Policy(revoke_unused_after=timedelta(hours=23))


def test_sweep_revokes_inactive_tokens_only(build: Callable[..., PATAuth], clock: FakeClock) -> None:
    auth = build()
    idle = auth.manager.create("alice", "idle")
    busy = auth.manager.create("bob", "busy")
    clock.advance(29 * DAY)
    auth.store.touch(busy.record.id, clock.datetime, "10.0.0.2", 5)
    clock.advance(2 * DAY)
    assert auth.manager.sweep(dry_run=True) == [idle.record.id]
    assert auth.store.get(idle.record.id).revoked_at is None  # type: ignore[union-attr]
    assert auth.manager.sweep() == [idle.record.id]
    assert auth.manager.get(idle.record.id).state(clock.datetime) == "revoked"
    assert auth.manager.get(busy.record.id).state(clock.datetime, auth.policy.revoke_unused_after) == "active"
    assert auth.manager.sweep() == []
    revoked = [e for e in log_of(auth) if e.kind == "revoked"]
    assert [(e.token_id, e.reason, e.actor) for e in revoked] == [(idle.record.id, "inactive", "sweep")]
    actions = [(e.actor, e.details) for e in log_of(auth) if e.kind == "admin_action"]
    assert actions == [  # newest first: every run is logged, dry or not, with what it found
        ("sweep", {"action": "sweep", "count": 0, "dry_run": False}),
        ("sweep", {"action": "sweep", "count": 1, "dry_run": False}),
        ("sweep", {"action": "sweep", "count": 1, "dry_run": True}),
    ]


def test_sweep_without_a_policy_says_so(build: Callable[..., PATAuth]) -> None:
    auth = build(policy=Policy())
    with pytest.raises(PolicyViolation, match="revoke_unused_after"):
        auth.manager.sweep()


# -- administration -------------------------------------------------------------


def test_search_across_users_with_filters_and_cursor(build: Callable[..., PATAuth], clock: FakeClock) -> None:
    auth = build(scope_rules=ScopeRules({"repo": ["repo:read", "repo:write"]}))
    made: list[TokenRecord] = []
    for n in range(12):
        scopes = [["repo"], ["repo:write"], ["repo:read"]][n % 3]
        made.append(auth.manager.create(f"user{n % 4}", f"token {n}", scopes).record)
        clock.advance(60)
    writers = auth.manager.search(TokenFilter(scope="repo:write"), sort="created_at", limit=1000).records
    assert [r.id for r in writers] == [r.id for r in made if r.scopes != ("repo:read",)]
    pages, cursor = [], None
    while True:
        page = auth.manager.search(sort="-created_at", cursor=cursor, limit=5)
        pages.append([r.id for r in page.records])
        if page.cursor is None:
            break
        cursor = page.cursor
    assert [len(p) for p in pages] == [5, 5, 2]
    assert [i for p in pages for i in p] == [r.id for r in reversed(made)]
    mine = auth.manager.search(TokenFilter(user_id="user1", name_contains="TOKEN 5")).records
    assert [r.id for r in mine] == [made[5].id]
    with pytest.raises(PolicyViolation, match="cursor"):
        auth.manager.search(cursor="not-a-cursor")
    with pytest.raises(PolicyViolation, match="cursor"):
        auth.manager.search(sort="created_at", cursor=page_cursor(auth))
    with pytest.raises(PolicyViolation, match="limit"):
        auth.manager.search(limit=1001)


def page_cursor(auth: PATAuth) -> str:
    cursor = auth.manager.search(sort="-created_at", limit=1).cursor
    assert cursor is not None
    return cursor


def test_filters_from_text_name_the_bad_parameter() -> None:
    selection = TokenFilter.from_params({"unused_for": "90d", "created_before": "2026-01-01", "state": "active"})
    assert selection.unused_for == timedelta(days=90) and selection.state == "active"
    for params, field in (
        ({"unused_for": "soon"}, "unused_for"),
        ({"created_before": "yesterday"}, "created_before"),
        ({"state": "dormant"}, "state"),
        ({"scope": "has space"}, "scope"),
        ({"colour": "blue"}, "colour"),
        ({"name_contains": ""}, "name_contains"),
    ):
        with pytest.raises(PolicyViolation) as refused:
            TokenFilter.from_params(params)
        assert refused.value.field == field, params


def test_revoke_by_filter_dry_run_then_for_real(build: Callable[..., PATAuth], clock: FakeClock) -> None:
    auth = build()
    old = [auth.manager.create(f"u{n}", "old", ["repo:write"]) for n in range(3)]
    reader = auth.manager.create("u9", "reader", ["repo:read"])
    clock.advance(DAY)
    cutoff = clock.datetime
    clock.advance(DAY)
    recent = auth.manager.create("u0", "recent", ["repo:write"])
    for new in (*old, reader, recent):
        auth.verify(new.token)  # cached now: the revocation must reach the cache
    with pytest.raises(PolicyViolation, match="at least one filter"):
        auth.manager.revoke_matching(TokenFilter(), actor="admin:root")
    selection = TokenFilter(scope="repo:write", created_before=cutoff)
    preview = auth.manager.revoke_matching(selection, actor="admin:root", dry_run=True)
    assert sorted(preview.ids) == sorted(n.record.id for n in old) and preview.dry_run
    assert auth.verify(old[0].token).user_id == "u0"
    report = auth.manager.revoke_matching(selection, actor="admin:root")
    assert sorted(report.ids) == sorted(preview.ids) and report.count == 3
    for new in old:
        with pytest.raises(InvalidToken):
            auth.verify(new.token)
    assert auth.verify(reader.token).user_id == "u9"
    assert auth.verify(recent.token).user_id == "u0"
    assert auth.manager.revoke_matching(selection, actor="admin:root").ids == []
    entries = log_of(auth)
    revoked = sorted((e.token_id, e.actor, e.reason) for e in entries if e.kind == "revoked")
    assert revoked == sorted((n.record.id, "admin:root", "admin") for n in old)
    actions = [e.details for e in entries if e.kind == "admin_action"]
    assert [(a["count"], a["dry_run"]) for a in actions] == [(0, False), (3, False), (3, True)]  # newest first
    assert all(a["action"] == "revoke_matching" and a["criteria"]["scope"] == "repo:write" for a in actions)


def test_an_admin_revoke_of_one_token_is_logged_with_its_actor(build: Callable[..., PATAuth]) -> None:
    auth = build()
    new = auth.manager.create("alice", "ci")
    auth.manager.revoke(new.record.id, actor="admin:root")
    entries = log_of(auth, user_id="alice")
    assert [(e.kind, e.actor) for e in entries] == [("revoked", "admin:root"), ("created", None)]
    action = log_of(auth, kinds=["admin_action"])[0]
    assert action.details["action"] == "revoke" and action.details["token_id"] == new.record.id


# -- the security log -------------------------------------------------------------


def test_the_log_keeps_each_change_and_never_a_secret(build: Callable[..., PATAuth]) -> None:
    auth = build()
    new = auth.manager.create("alice", "ci", ["repo:read"])
    auth.manager.rename(new.record.id, "deploy")
    auth.manager.update(new.record.id, description="ci box")
    rotated = auth.manager.rotate(new.record.id, grace=timedelta(hours=1))
    auth.manager.revoke(rotated.record.id)
    entries = log_of(auth, user_id="alice")
    assert [e.kind for e in entries] == ["revoked", "revoked", "rotated", "updated", "renamed", "created"]
    assert entries[2].details["new_id"] == rotated.record.id
    text = json.dumps([e.public_dict() for e in entries])
    for secret in (new.token, rotated.token, new.token.split("_", 1)[1][12:]):
        assert secret not in text
    assert log_of(auth, user_id="bob") == []
    assert [e.kind for e in log_of(auth, token_id=new.record.id, kinds=["created", "renamed"])] == [
        "renamed",
        "created",
    ]


def test_first_use_from_a_new_address_is_logged_and_hooked(build: Callable[..., PATAuth]) -> None:
    seen: list[Event] = []
    auth = build(on_new_address=seen.append)
    new = auth.manager.create("alice", "ci")
    auth.verify(new.token, client_ip="10.0.0.1")
    wait_for(lambda: len(seen) == 1, "the first new_address event")
    wait_for(lambda: "10.0.0.1" in auth.store.get(new.record.id).last_used_ips, "the touch")  # type: ignore[union-attr]
    auth.verify(new.token, client_ip="2001:db8::7")
    wait_for(lambda: len(seen) == 2, "the second new_address event")
    assert [(e.client_ip, e.user_id) for e in seen] == [("10.0.0.1", "alice"), ("2001:db8::7", "alice")]
    addresses = [e.client_ip for e in log_of(auth, kinds=["new_address"])]
    assert addresses == ["2001:db8::7", "10.0.0.1"]


def test_throttling_is_summarised_per_window() -> None:
    written: list[LogEntry] = []
    clock = FakeClock()
    log = SecurityLog(written.extend, clock=clock, interval=3600)
    try:
        for _ in range(500):
            log.record(Event("failed", clock.datetime, "Q00000000001", "alice", "throttled", "10.0.0.9"))
        log.record(Event("failed", clock.datetime, "Q00000000001", "alice", "bad_secret", "10.0.0.9"))
        log.flush()
        assert written == []  # the window is still open
        clock.advance(61)
        log.flush()
        (entry,) = written
        assert (entry.kind, entry.token_id, entry.user_id) == ("throttled", "Q00000000001", "alice")
        assert entry.details == {"count": 500, "window_seconds": 61.0}
    finally:
        log.close()


def test_a_store_outage_drops_entries_with_a_counter_and_never_fails_the_request(
    build: Callable[..., PATAuth], caplog: pytest.LogCaptureFixture
) -> None:
    auth = build()
    assert auth.security_log is not None
    broken = {"on": True}
    real_append = auth.store.append_log

    def append(entries: list[LogEntry]) -> None:
        if broken["on"]:
            raise ConnectionError("store down")
        real_append(entries)

    auth.store.append_log = append  # type: ignore[method-assign]
    auth._sync._bound.clear()  # the driver binds methods once: rebind to the broken one
    caplog.set_level(logging.WARNING, "pat_middleware")
    new = auth.manager.create("alice", "ci")  # the request succeeds
    auth.manager.rename(new.record.id, "renamed")
    auth.security_log.flush()
    assert auth.security_log.dropped == 2
    assert sum("security log: could not write" in r.message for r in caplog.records) == 1
    broken["on"] = False
    auth.manager.rename(new.record.id, "again")
    assert [e.kind for e in log_of(auth)] == ["renamed"]


def test_the_buffer_is_bounded() -> None:
    log = SecurityLog(lambda entries: None, capacity=10, interval=3600)
    try:
        for n in range(25):
            log.record(Event("created", FakeClock().datetime, f"Q{n:011d}", "alice"))
        assert log.dropped == 15
    finally:
        log.close()
    assert log.written == 10


def test_the_log_can_be_turned_off(build: Callable[..., PATAuth]) -> None:
    auth = build(security_log=False)
    auth.manager.create("alice", "ci")
    assert auth.security_log is None
    assert auth.manager.security_log().entries == []


def test_old_entries_are_pruned_by_retention(build: Callable[..., PATAuth], clock: FakeClock) -> None:
    auth = build(log_retention=timedelta(days=10))
    auth.manager.create("alice", "one")
    assert len(log_of(auth)) == 1
    clock.advance(11 * DAY)
    two = auth.manager.create("alice", "two")
    assert auth.security_log is not None
    auth.security_log._next_prune = 0.0  # prune on this flush rather than within the hour
    assert [e.token_id for e in log_of(auth)] == [two.record.id]


# -- notices ----------------------------------------------------------------------


def test_notify_tells_each_owner_once_per_window(build: Callable[..., PATAuth], clock: FakeClock) -> None:
    auth = build(policy=Policy())
    soon = [
        auth.manager.create(user, f"soon-{n}", expires_in=5 * DAY) for n, user in enumerate(("alice", "bob", "alice"))
    ]
    auth.manager.create("carol", "later", expires_in=20 * DAY)
    calls: list[tuple[str, list[str]]] = []

    def hook(user_id: str, records: list[TokenRecord]) -> None:
        calls.append((user_id, sorted(r.id for r in records)))

    report = auth.manager.notify(timedelta(days=7), hook)
    assert sorted(calls) == [
        ("alice", sorted([soon[0].record.id, soon[2].record.id])),
        ("bob", [soon[1].record.id]),
    ]
    assert report.failed == [] and set(report.notified) == {"alice", "bob"}
    clock.advance(DAY)
    assert auth.manager.notify(timedelta(days=7), hook).notified == {}  # tomorrow's cron run: nothing new
    assert len(calls) == 2
    clock.advance(3 * DAY)  # one day left: the 1-day window is another window
    assert len(auth.manager.notify(timedelta(days=1), hook).notified) == 2


def test_a_failing_hook_is_reported_and_the_others_still_told(build: Callable[..., PATAuth]) -> None:
    auth = build(policy=Policy())
    for user in ("alice", "bob"):
        auth.manager.create(user, "soon", expires_in=2 * DAY)
    told: list[str] = []

    def hook(user_id: str, records: list[TokenRecord]) -> None:
        if user_id == "alice":
            raise RuntimeError("smtp down")
        told.append(user_id)

    report = auth.manager.notify(timedelta(days=7), hook)
    assert report.failed == ["alice"] and told == ["bob"]


def test_async_manager_has_the_same_oversight(build: Callable[..., PATAuth], clock: FakeClock) -> None:
    auth = build()

    async def scenario() -> None:
        new = await auth.async_manager.create("alice", "ci", expires_in=2 * DAY)
        page = await auth.async_manager.search(TokenFilter(user_id="alice"))
        assert [r.id for r in page.records] == [new.record.id]
        report = await auth.async_manager.notify(timedelta(days=7), lambda user, records: None)
        assert report.notified == {"alice": [new.record.id]}
        clock.advance(31 * DAY)
        assert await auth.async_manager.sweep(dry_run=True) == []  # expired by now: not "inactive"
        assert auth.security_log is not None
        auth.security_log.flush(force=True)
        log = await auth.async_manager.security_log(user_id="alice")
        assert [e.kind for e in log.entries] == ["created"]

    asyncio.run(scenario())


def test_a_flood_on_a_key_id_lands_in_its_owners_log_as_one_summary(
    build: Callable[..., PATAuth], clock: FakeClock
) -> None:
    auth = build()
    new = auth.manager.create("alice", "ci")
    reasons = []
    for _ in range(25):
        forged, _ = generate(auth.prefix, key_id=new.record.id)  # well-formed, a wrong secret
        with pytest.raises(InvalidToken) as refused:
            auth.verify(forged, client_ip="203.0.113.9")
        reasons.append(refused.value.reason)
    throttled = reasons.count("throttled")
    assert throttled >= 10, reasons
    clock.advance(61)
    (entry,) = log_of(auth, user_id="alice", kinds=["throttled"])
    assert entry.token_id == new.record.id and entry.details["count"] == throttled


def test_a_process_that_never_closes_its_auth_keeps_its_entries(tmp_path: Path) -> None:
    """The writer's thread is a daemon; at interpreter exit what it holds is written."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from pat_middleware import PATAuth, SQLiteStore\n"
        "auth = PATAuth(SQLiteStore(sys.argv[1]))\n"
        "auth.manager.create('alice', 'ci')\n"
    )
    db = tmp_path / "t.db"
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", script, str(db)], check=True, env={"PYTHONPATH": str(root)}, timeout=60)
    auth = PATAuth(SQLiteStore(db), security_log=False)
    try:
        assert [e.kind for e in auth.manager.security_log(user_id="alice").entries] == ["created"]
    finally:
        auth.close()


def test_a_store_written_for_0_1_keeps_verifying_without_a_log(caplog: pytest.LogCaptureFixture) -> None:
    """A custom store without the new methods: tokens still verify, the log is off, said once."""

    class OldStore(MemoryStore):
        append_log = None  # type: ignore[assignment]

    caplog.set_level(logging.WARNING, "pat_middleware")
    auth = PATAuth(OldStore(), hasher=FAST_ARGON2)
    try:
        assert auth.security_log is None
        assert "OldStore has no append_log" in caplog.text
        new = auth.manager.create("alice", "ci")
        assert auth.verify(new.token).user_id == "alice"
        assert auth.health().status_code == 200
    finally:
        auth.close()
