"""Token management: create, list, rename, update, revoke, rotate, expiring, purge."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from pat_middleware import (
    InvalidToken,
    MemoryStore,
    NameTaken,
    PATAuth,
    Policy,
    PolicyViolation,
    SQLiteStore,
    TokenNotFound,
    TokenRevoked,
)
from pat_middleware.core.events import Event
from pat_middleware.core.models import TokenRecord
from pat_middleware.core.tokens import generate
from pat_middleware.stores import Store
from tests.helpers import FAST_ARGON2, FakeClock


@pytest.fixture
def events() -> list[Event]:
    return []


@pytest.fixture
def auth(clock: FakeClock, events: list[Event]) -> Iterator[PATAuth]:
    a = PATAuth(MemoryStore(), hasher=FAST_ARGON2, clock=clock, on_event=events.append)
    yield a
    a.close()


def test_create_returns_plaintext_once_and_stores_only_a_hash(auth: PATAuth) -> None:
    new = auth.manager.create("alice", "ci", ["repo:read", "repo:read", "user"], description="CI bot")
    assert new.token.startswith("pat_")
    assert new.record.scopes == ("repo:read", "user")
    assert new.record.description == "CI bot"
    assert new.token not in repr(new)
    assert new.token not in str(new)
    secret = new.token[4 + 12 : 4 + 44]
    stored = auth.manager.get(new.record.id)
    assert secret not in stored.hash
    assert stored.hash.startswith("$argon2id$")
    assert "hash" not in stored.public_dict(datetime.now(UTC))


def test_several_named_tokens_per_user_and_unique_names(auth: PATAuth) -> None:
    auth.manager.create("alice", "ci")
    auth.manager.create("alice", "laptop")
    auth.manager.create("bob", "ci")  # names are per user
    with pytest.raises(NameTaken):
        auth.manager.create("alice", "ci")
    assert sorted(r.name for r in auth.manager.list("alice")) == ["ci", "laptop"]


def test_list_filters_by_state(auth: PATAuth, clock: FakeClock) -> None:
    a = auth.manager.create("alice", "a", expires_in=timedelta(hours=1))
    b = auth.manager.create("alice", "b")
    auth.manager.create("alice", "c")
    auth.manager.revoke(b.record.id)
    clock.advance(timedelta(hours=2))
    assert [r.name for r in auth.manager.list("alice")] == ["c"]
    assert [r.name for r in auth.manager.list("alice", "expired")] == ["a"]
    assert [r.name for r in auth.manager.list("alice", "revoked")] == ["b"]
    assert sorted(r.name for r in auth.manager.list("alice", "inactive")) == ["a", "b"]
    assert len(auth.manager.list("alice", "all")) == 3
    with pytest.raises(PolicyViolation):
        auth.manager.list("alice", "bogus")  # type: ignore[arg-type]
    assert a.record.id in {r.id for r in auth.manager.list("alice", "all")}


def test_rename_and_update(auth: PATAuth, clock: FakeClock) -> None:
    new = auth.manager.create("alice", "ci")
    auth.manager.create("alice", "other")
    renamed = auth.manager.rename(new.record.id, "  deploy  ")
    assert renamed.name == "deploy"
    assert auth.verify(new.token).token_name == "deploy"  # the cache was invalidated
    with pytest.raises(NameTaken):
        auth.manager.rename(new.record.id, "other")
    updated = auth.manager.update(new.record.id, description="new", expires_in=timedelta(days=2))
    assert updated.description == "new"
    assert updated.expires_at == clock.datetime + timedelta(days=2)
    assert auth.verify(new.token).expires_at == updated.expires_at


def test_ownership_hides_other_users_tokens(auth: PATAuth) -> None:
    new = auth.manager.create("alice", "ci")
    for op in (
        lambda: auth.manager.get(new.record.id, user_id="bob"),
        lambda: auth.manager.rename(new.record.id, "x", user_id="bob"),
        lambda: auth.manager.revoke(new.record.id, user_id="bob"),
        lambda: auth.manager.rotate(new.record.id, user_id="bob"),
        lambda: auth.manager.get("nope"),
    ):
        with pytest.raises(TokenNotFound):
            op()
    assert auth.verify(new.token).user_id == "alice"


def test_revoke_is_idempotent_and_final(auth: PATAuth) -> None:
    new = auth.manager.create("alice", "ci")
    first = auth.manager.revoke(new.record.id)
    second = auth.manager.revoke(new.record.id)
    assert first.revoked_at is not None
    assert second.revoked_at == first.revoked_at
    with pytest.raises(TokenRevoked):
        auth.manager.rename(new.record.id, "x")
    with pytest.raises(InvalidToken):
        auth.verify(new.token)


def test_revoke_all(auth: PATAuth) -> None:
    tokens = [auth.manager.create("alice", f"t{i}").token for i in range(3)]
    bob = auth.manager.create("bob", "t").token
    ids = auth.manager.revoke_all("alice")
    assert len(ids) == 3
    for token in tokens:
        with pytest.raises(InvalidToken):
            auth.verify(token)
    assert auth.verify(bob).user_id == "bob"


def test_rotate_without_grace(auth: PATAuth, clock: FakeClock, events: list[Event]) -> None:
    old = auth.manager.create("alice", "ci", ["repo"], expires_in=timedelta(days=10), allowed_cidrs=["10.0.0.0/8"])
    auth.verify(old.token, client_ip="10.0.0.1")
    clock.advance(timedelta(days=1))
    new = auth.manager.rotate(old.record.id)
    assert new.token != old.token
    assert new.record.name == "ci"
    assert new.record.scopes == ("repo",)
    assert new.record.allowed_cidrs == ("10.0.0.0/8",)
    assert new.record.family_id == old.record.id
    assert new.record.rotated_from == old.record.id
    assert new.record.expires_at == clock.datetime + timedelta(days=10)  # same lifetime as before
    with pytest.raises(InvalidToken) as info:
        auth.verify(old.token, client_ip="10.0.0.1")
    assert info.value.reason == "revoked"
    assert auth.verify(new.token, client_ip="10.0.0.1").token_id == new.record.id
    assert "rotated" in [e.kind for e in events]


def test_rotate_with_grace(auth: PATAuth, clock: FakeClock) -> None:
    old = auth.manager.create("alice", "ci")
    auth.verify(old.token)
    new = auth.manager.rotate(old.record.id, grace=timedelta(minutes=10), expires_in=timedelta(days=1))
    assert new.record.expires_at == clock.datetime + timedelta(days=1)
    assert auth.verify(old.token)  # still valid inside the grace period
    assert auth.verify(new.token)
    clock.advance(timedelta(minutes=10))
    with pytest.raises(InvalidToken) as info:
        auth.verify(old.token)
    assert info.value.reason == "revoked"
    assert auth.verify(new.token)


def test_a_token_in_its_grace_is_rotated_until_the_grace_ends(auth: PATAuth, clock: FakeClock) -> None:
    old = auth.manager.create("alice", "deploy", expires_in=timedelta(days=3))
    new = auth.manager.rotate(old.record.id, grace=timedelta(hours=1), expires_in=timedelta(days=30))
    record = auth.manager.get(old.record.id)
    assert record.state(clock.datetime) == "rotated" and record.is_active(clock.datetime)
    assert record.revoked_at == clock.datetime + timedelta(hours=1)  # when the grace ends
    assert record.public_dict(clock.datetime)["state"] == "rotated"
    assert auth.manager.get(new.record.id).state(clock.datetime) == "active"
    # "active" lists every token that still authenticates; "rotated" the replaced ones
    assert {r.id for r in auth.manager.list("alice")} == {old.record.id, new.record.id}
    assert [r.id for r in auth.manager.list("alice", state="rotated")] == [old.record.id]
    assert auth.manager.list("alice", state="inactive") == []
    # the replaced token is not "expiring": its successor is what a reminder should name
    assert [r.id for r in auth.manager.expiring(timedelta(days=7))] == []
    clock.advance(timedelta(hours=1))
    record = auth.manager.get(old.record.id)
    assert record.state(clock.datetime) == "revoked" and not record.is_active(clock.datetime)
    assert [r.id for r in auth.manager.list("alice")] == [new.record.id]
    assert [r.id for r in auth.manager.list("alice", state="revoked")] == [old.record.id]


def test_rotating_a_revoked_token_revokes_the_family(auth: PATAuth, events: list[Event]) -> None:
    first = auth.manager.create("alice", "ci")
    second = auth.manager.rotate(first.record.id)
    third = auth.manager.rotate(second.record.id, grace=timedelta(hours=1))
    unrelated = auth.manager.create("alice", "other")
    with pytest.raises(TokenRevoked) as info:
        auth.manager.rotate(first.record.id)  # the leaked, already rotated token
    assert info.value.family_revoked
    assert events[-1].kind == "family_revoked"
    for token in (first.token, second.token, third.token):
        with pytest.raises(InvalidToken):
            auth.verify(token)
    assert auth.verify(unrelated.token)


def test_rotating_during_grace_is_reuse_too(auth: PATAuth) -> None:
    old = auth.manager.create("alice", "ci")
    new = auth.manager.rotate(old.record.id, grace=timedelta(hours=1))
    with pytest.raises(TokenRevoked):
        auth.manager.rotate(old.record.id)
    with pytest.raises(InvalidToken):
        auth.verify(new.token)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "bad\nname"}, "name"),
        ({"scopes": ["has space"]}, "scopes"),
        ({"expires_in": timedelta(days=400)}, "expires_at"),
        ({"expires_in": timedelta(seconds=-1)}, "expires_at"),
        ({"never_expires": True}, "expires_at"),
        ({"expires_in": timedelta(days=1), "expires_at": datetime(2030, 1, 1, tzinfo=UTC)}, "expires_at"),
        ({"allowed_cidrs": ["10.0.0.0/33"]}, "allowed_cidrs"),
        ({"description": "d" * 1001}, "description"),
        ({"user_id": ""}, "user_id"),
    ],
)
def test_policy_violations_name_the_field(auth: PATAuth, kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"user_id": "alice", "name": "ci", **kwargs}
    with pytest.raises(PolicyViolation) as info:
        auth.manager.create(**args)  # type: ignore[arg-type]
    assert info.value.field == field
    assert str(info.value)


def test_policy_allowed_scopes_and_limits(clock: FakeClock) -> None:
    policy = Policy(
        allowed_scopes=lambda user: ["repo:read"] if user == "guest" else ["repo:*", "admin"],
        max_tokens_per_user=2,
        require_expiry=False,
        max_lifetime=None,
    )
    auth = PATAuth(MemoryStore(), hasher=FAST_ARGON2, clock=clock, policy=policy)
    with pytest.raises(PolicyViolation, match="repo:write"):
        auth.manager.create("guest", "g", ["repo:write"])
    auth.manager.create("alice", "a", ["repo:write", "admin"], never_expires=True)
    b = auth.manager.create("alice", "b", ["repo:read"])
    with pytest.raises(PolicyViolation, match="at most 2"):
        auth.manager.create("alice", "c")
    auth.manager.revoke(b.record.id)
    assert auth.manager.create("alice", "c").record.name == "c"


def test_expiring_and_purge(auth: PATAuth, clock: FakeClock) -> None:
    soon = auth.manager.create("alice", "soon", expires_in=timedelta(days=3))
    auth.manager.create("alice", "later", expires_in=timedelta(days=20))
    gone = auth.manager.create("bob", "gone", expires_in=timedelta(days=2))
    auth.manager.revoke(gone.record.id)
    assert [r.name for r in auth.manager.expiring(timedelta(days=7))] == ["soon"]
    assert auth.manager.expiring(timedelta(days=7), user_id="bob") == []
    assert auth.manager.purge() == [gone.record.id]
    clock.advance(timedelta(days=4))
    assert auth.manager.purge(older_than=timedelta(days=2)) == []
    assert auth.manager.purge(older_than=timedelta(days=1)) == [soon.record.id]
    with pytest.raises(TokenNotFound):
        auth.manager.get(soon.record.id)


def test_purge_dry_run_deletes_nothing_and_emits_nothing(auth: PATAuth, clock: FakeClock, events: list[Event]) -> None:
    gone = auth.manager.create("bob", "gone", expires_in=timedelta(days=2))
    auth.manager.revoke(gone.record.id)
    soon = auth.manager.create("alice", "soon", expires_in=timedelta(days=1))
    clock.advance(timedelta(days=2))
    del events[:]
    listed = auth.manager.purge(dry_run=True)
    assert sorted(listed) == sorted([gone.record.id, soon.record.id])
    assert asyncio.run(auth.async_manager.purge(timedelta(0), dry_run=True)) == listed
    assert auth.manager.purge(timedelta(days=3), dry_run=True) == []
    assert events == []
    assert auth.manager.get(gone.record.id).id == gone.record.id
    assert auth.manager.purge() == listed
    assert [e.kind for e in events] == ["purged", "purged"]


def test_no_plaintext_secret_in_the_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.db"
    auth = PATAuth(SQLiteStore(path), hasher=FAST_ARGON2)
    tokens = [auth.manager.create("alice", f"t{i}").token for i in range(5)]
    for t in tokens:
        auth.verify(t)
    auth.manager.rotate(auth.verify(tokens[0]).token_id)
    auth.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"$argon2id$" in raw
    for t in tokens:
        assert t[4 + 12 : 4 + 44].encode() not in raw
        assert t.encode() not in raw


def test_an_expired_token_cannot_be_extended(auth: PATAuth, clock: FakeClock) -> None:
    new = auth.manager.create("alice", "ci", expires_in=timedelta(days=1))
    clock.advance(timedelta(days=2))
    with pytest.raises(PolicyViolation) as info:
        auth.manager.update(new.record.id, expires_in=timedelta(days=30))
    assert info.value.field == "expires_at"
    assert auth.manager.update(new.record.id, description="still describable").description == "still describable"
    with pytest.raises(InvalidToken):
        auth.verify(new.token)


def test_max_lifetime_counts_from_creation(auth: PATAuth, clock: FakeClock) -> None:
    new = auth.manager.create("alice", "ci", expires_in=timedelta(days=300))
    clock.advance(timedelta(days=200))
    with pytest.raises(PolicyViolation, match="after its creation"):
        auth.manager.update(new.record.id, expires_in=timedelta(days=200))  # 400 days after creation
    updated = auth.manager.update(new.record.id, expires_in=timedelta(days=166))
    assert updated.expires_at == new.record.created_at + timedelta(days=366)


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.create("alice", "x", expires_at=datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=5)))),
        lambda m: m.create("alice", "x", expires_at=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))),
        lambda m: m.create("alice", "x", expires_in=timedelta(days=999_999_999)),
        lambda m: m.expiring(timedelta(days=999_999_999)),
        lambda m: m.purge(older_than=timedelta(days=999_999_999)),
    ],
)
def test_out_of_range_dates_are_policy_violations(auth: PATAuth, call: Any) -> None:
    with pytest.raises(PolicyViolation):
        call(auth.manager)


def test_not_found_never_echoes_a_pasted_token(auth: PATAuth) -> None:
    token = auth.manager.create("alice", "ci").token
    with pytest.raises(TokenNotFound) as info:
        auth.manager.get(token)  # a token pasted where its id belongs
    assert token not in str(info.value)
    assert token not in repr(info.value)
    with pytest.raises(TokenNotFound, match="'K00000000009'"):
        auth.manager.get("K00000000009")


def test_revoking_a_rotated_token_ends_its_predecessors_grace(auth: PATAuth) -> None:
    first = auth.manager.create("alice", "ci")
    second = auth.manager.rotate(first.record.id, grace=timedelta(hours=1))
    third = auth.manager.rotate(second.record.id, grace=timedelta(hours=1))
    assert auth.verify(first.token) and auth.verify(second.token)  # both inside their grace
    auth.manager.revoke(third.record.id)
    for token in (first.token, second.token, third.token):
        with pytest.raises(InvalidToken) as info:
            auth.verify(token)
        assert info.value.reason == "revoked"


def test_revoking_a_predecessor_in_grace_leaves_its_successor(auth: PATAuth) -> None:
    old = auth.manager.create("alice", "ci")
    new = auth.manager.rotate(old.record.id, grace=timedelta(hours=1))
    auth.manager.revoke(old.record.id)  # cut the grace short
    with pytest.raises(InvalidToken):
        auth.verify(old.token)
    assert auth.verify(new.token).token_id == new.record.id


class WriteLog(MemoryStore):
    """A MemoryStore that logs each write call: ``(method, first argument)``."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, Any]] = []

    def _log(self, method: str, arg: Any) -> None:
        self.writes.append((method, arg))

    def insert(self, record: TokenRecord) -> None:
        self._log("insert", record.id)
        super().insert(record)

    def update(self, token_id: str, changes: Any) -> TokenRecord | None:
        self._log("update", token_id)
        return super().update(token_id, changes)

    def revoke(self, token_id: str, at: datetime) -> list[str]:
        self._log("revoke", token_id)
        return super().revoke(token_id, at)

    def revoke_family(self, family_id: str, at: datetime) -> list[str]:
        self._log("revoke_family", family_id)
        return super().revoke_family(family_id, at)

    def revoke_user(self, user_id: str, at: datetime) -> list[str]:
        self._log("revoke_user", user_id)
        return super().revoke_user(user_id, at)

    def rotate(self, old_id: str, new: TokenRecord, revoke_at: datetime) -> bool:
        self._log("rotate", old_id)
        return super().rotate(old_id, new, revoke_at)


def _revoked_events(events: list[Event]) -> list[str | None]:
    return sorted(e.token_id for e in events if e.kind == "revoked")


def test_revoke_takes_the_predecessors_in_grace_in_one_store_write(clock: FakeClock, events: list[Event]) -> None:
    store = WriteLog()
    auth = PATAuth(store, hasher=FAST_ARGON2, clock=clock, on_event=events.append)
    first = auth.manager.create("alice", "ci")
    clock.advance(60)
    second = auth.manager.rotate(first.record.id, grace=timedelta(hours=1))
    clock.advance(60)
    third = auth.manager.rotate(second.record.id, grace=timedelta(hours=1))
    clock.advance(60)
    for new in (first, second, third):
        auth.verify(new.token)  # all three cached in this process
    del store.writes[:], events[:]
    record = auth.manager.revoke(third.record.id)
    assert store.writes == [("revoke", third.record.id)]  # one atomic store operation
    assert (record.id, record.revoked_at) == (third.record.id, clock.datetime)
    assert _revoked_events(events) == sorted([first.record.id, second.record.id, third.record.id])
    for new in (first, second, third):
        assert auth.store.get(new.record.id).revoked_at == clock.datetime  # type: ignore[union-attr]
        with pytest.raises(InvalidToken) as info:
            auth.verify(new.token)  # the local cache was told about all three
        assert info.value.reason == "revoked"
    # again: nothing left to revoke, no event, one store write, the revocation unchanged
    del store.writes[:], events[:]
    clock.advance(60)
    assert auth.manager.revoke(third.record.id).revoked_at == record.revoked_at
    assert store.writes == [("revoke", third.record.id)] and _revoked_events(events) == []
    auth.close()


def _crashed_revoke(store: Store, now: datetime) -> tuple[str, str, TokenRecord]:
    """What a revoke killed between its two writes left behind (this library's revoke
    once wrote the token and its predecessors separately): a token rotated with an
    hour of grace, the successor revoked, the predecessor still in its grace.
    Made directly through the store. Returns both plaintexts and the successor."""
    old_token, old = generate()
    new_token, new = generate()
    old_record = TokenRecord(
        id=old.key_id, user_id="alice", name="ci", hash=FAST_ARGON2.hash(old.secret),
        created_at=now - timedelta(days=1), revoked_at=now + timedelta(hours=1),
    )  # fmt: skip
    new_record = TokenRecord(
        id=new.key_id, user_id="alice", name="ci", hash=FAST_ARGON2.hash(new.secret),
        created_at=now - timedelta(minutes=1), revoked_at=now - timedelta(seconds=30),
        family_id=old.key_id, rotated_from=old.key_id,
    )  # fmt: skip
    store.insert(old_record)
    store.insert(new_record)
    return old_token, new_token, new_record


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_retried_revoke_ends_the_grace_a_crashed_revoke_left(
    tmp_path: Path, clock: FakeClock, events: list[Event], kind: str
) -> None:
    store = MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "tokens.db")
    auth = PATAuth(store, hasher=FAST_ARGON2, clock=clock, on_event=events.append)
    old_token, new_token, new = _crashed_revoke(store, clock.datetime)
    assert auth.verify(old_token).token_id == new.rotated_from  # still live: the hole
    with pytest.raises(InvalidToken):
        auth.verify(new_token)
    assert auth.manager.revoke(new.id) == new  # already revoked: returned as it is
    assert _revoked_events(events) == [new.rotated_from]
    with pytest.raises(InvalidToken) as info:
        auth.verify(old_token)
    assert info.value.reason == "revoked"
    assert auth.store.get(new.rotated_from).revoked_at == clock.datetime  # type: ignore[arg-type,union-attr]
    auth.close()


@pytest.mark.parametrize("token_id", ["", "short", "a\x00bcdefghijk", "AAAAAAAAAAA%", "ÄAAAAAAAAAAA", "A" * 13, 12])
def test_what_cannot_be_a_token_id_is_not_found_without_asking_the_store(tmp_path: Path, token_id: Any) -> None:
    """A store that cannot even be opened is never reached: the answer is 404, not 503."""
    broken = PATAuth(SQLiteStore(tmp_path / "missing" / "t.db"), hasher=FAST_ARGON2)
    try:
        for call in (broken.manager.get, broken.manager.revoke, broken.manager.rename):
            args = (token_id, "new name") if call == broken.manager.rename else (token_id,)
            with pytest.raises(TokenNotFound):
                call(*args)
    finally:
        broken.close()


def test_one_update_writes_every_change_or_none(auth: PATAuth, clock: FakeClock, events: list[Event]) -> None:
    new = auth.manager.create("alice", "first", expires_in=timedelta(days=1))
    auth.manager.create("alice", "taken")
    clock.advance(timedelta(days=2))  # expired: its expiry cannot be changed
    with pytest.raises(PolicyViolation):
        auth.manager.update(new.record.id, name="second", expires_in=timedelta(days=5))
    with pytest.raises(NameTaken):
        auth.manager.update(new.record.id, name="taken", description="never written")
    assert auth.manager.get(new.record.id) == new.record
    updated = auth.manager.update(new.record.id, name="second", description="both at once")
    assert (updated.name, updated.description) == ("second", "both at once")
    assert [e.kind for e in events][-1] == "updated"
    auth.manager.rename(new.record.id, "third")
    assert [e.kind for e in events][-1] == "renamed"


@pytest.mark.parametrize("user_id", ["", "   ", "u\x1bx", "a\x00b", "\udcff", "x" * 256, None])
def test_what_cannot_be_a_user_id_is_refused_before_the_store(tmp_path: Path, user_id: Any) -> None:
    """422-style PolicyViolation naming user_id, never a store outage (PostgreSQL refuses NUL)."""
    broken = PATAuth(SQLiteStore(tmp_path / "missing" / "t.db"), hasher=FAST_ARGON2)
    try:
        for call in (lambda: broken.manager.create(user_id, "n"), lambda: broken.manager.list(user_id)):
            with pytest.raises(PolicyViolation) as caught:
                call()
            assert caught.value.field == "user_id"
        with pytest.raises(PolicyViolation):
            broken.manager.revoke_all(user_id)
    finally:
        broken.close()


def test_rotation_grace_is_capped_by_the_policy(auth: PATAuth) -> None:
    new = auth.manager.create("alice", "graceful")
    for grace in (timedelta(days=7, seconds=1), timedelta(days=99999999), timedelta(seconds=-1)):
        with pytest.raises(PolicyViolation) as caught:
            auth.manager.rotate(new.record.id, grace=grace)
        assert caught.value.field == "grace"
    assert auth.manager.get(new.record.id).revoked_at is None  # nothing rotated
    strict = PATAuth(MemoryStore(), hasher=FAST_ARGON2, policy=Policy(max_grace=timedelta(hours=1)))
    token = strict.manager.create("alice", "t")
    with pytest.raises(PolicyViolation):
        strict.manager.rotate(token.record.id, grace=timedelta(hours=2))
    assert strict.manager.rotate(token.record.id, grace=timedelta(hours=1)).record.rotated_from == token.record.id
    strict.close()


@pytest.mark.parametrize(
    "user_id",
    [
        "alice@example.com",
        "6f1c2a9e-0d1b-4c55-9a53-1f0a3f1e2b7d",
        "auth0|123",
        " leading",
        "Борис",
        "\u0639\u0644\u06cc\u200c\u0631\u0636\u0627",  # a Persian name with a ZWNJ
        "👩\u200d💻",
    ],
)
def test_real_user_ids_are_accepted(auth: PATAuth, user_id: str) -> None:
    # Persian needs ZERO WIDTH NON-JOINER, emoji sequences ZERO WIDTH JOINER
    new = auth.manager.create(user_id, "t")
    assert [r.id for r in auth.manager.list(user_id)] == [new.record.id]


@pytest.mark.parametrize(
    "user_id", ["a\u202eb", "a\u200bb", "a\ue000b"]
)  # bidi override, zero width space, private use
def test_user_ids_that_would_mislead_a_terminal_are_refused(auth: PATAuth, user_id: str) -> None:
    with pytest.raises(PolicyViolation):
        auth.manager.create(user_id, "t")
