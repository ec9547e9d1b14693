"""The store contract: every backend must pass these tests.

Reuse it by subclassing in a backend's test module and providing a ``store``
fixture that yields an EMPTY store private to the test (a fresh file, table
or key prefix), closed afterwards::

    class TestMyStore(StoreContract):
        @pytest.fixture
        def store(self) -> Iterator[Store]:
            s = MyStore(...)
            yield s
            s.close()

An async store runs through the very same tests behind :class:`SyncOverAsync`.

What the contract pins down beyond ``stores/base.py``:

* listings (``list_user``, ``list_family``) are ordered by ``(created_at, id)``;
  ``list_expiring`` by ``(expires_at, id)``; ``revoke``, ``revoke_*``,
  ``purge`` and ``purgeable`` return ids in any order;
* datetimes come back aware UTC, to the microsecond; naive inputs (records
  and ``at`` arguments) are taken as UTC;
* tuple fields come back as tuples;
* inserting an existing id raises (any exception other than success) and
  changes nothing;
* ``changes_since`` reports each changed id once, with its latest stamp
  (aware UTC, the store's clock, which here is this host's or a server on it).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Awaitable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

import pytest

from pat_middleware.core.audit import LogEntry, LogQuery
from pat_middleware.core.models import TokenRecord
from pat_middleware.core.query import TokenQuery
from pat_middleware.errors import NameTaken
from pat_middleware.stores.base import UPDATABLE_FIELDS, VALIDITY_FIELDS, AsyncStore, Store
from tests.store_contract_oversight import OversightContract

__all__ = ["T0", "StoreContract", "SyncOverAsync", "make_record"]

T = TypeVar("T")

#: A fixed instant with microseconds, so precision loss shows.
T0 = datetime(2031, 3, 14, 15, 9, 26, 535897, tzinfo=UTC)
US = timedelta(microseconds=1)
_ids = itertools.count()


def make_record(**fields: Any) -> TokenRecord:
    """A record with a fresh 12-character id and name; ``fields`` override."""
    n = next(_ids)
    values: dict[str, Any] = {
        "id": f"K{n:011d}",
        "user_id": "alice",
        "name": f"token-{n}",
        "hash": f"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${n:022d}",
        "created_at": T0,
    }
    values.update(fields)
    return TokenRecord(**values)


def ids(records: list[TokenRecord]) -> list[str]:
    return [r.id for r in records]


def fetch(store: Store, token_id: str) -> TokenRecord:
    """``store.get(token_id)``, which must exist and have aware UTC datetimes."""
    record = store.get(token_id)
    assert record is not None, token_id
    assert_aware_utc(record)
    return record


def assert_aware_utc(record: TokenRecord) -> None:
    for field in ("created_at", "expires_at", "last_used_at", "revoked_at"):
        value = getattr(record, field)
        if value is not None:
            assert value.tzinfo is not None, field
            assert value.utcoffset() == timedelta(0), field


#: How far a store's clock may be from this host's in these tests (same machine).
CLOCK_SLACK = timedelta(seconds=3)


def changed(store: Store, since: datetime) -> dict[str, datetime]:
    """``store.changes_since(since)`` as a dict, checking each id comes once, stamped aware UTC."""
    changes = store.changes_since(since)
    result = dict(changes)
    assert len(result) == len(changes), changes
    for stamp in result.values():
        assert stamp.tzinfo is not None and stamp.utcoffset() == timedelta(0)
        assert stamp >= since
    return result


def recent(store: Store) -> dict[str, datetime]:
    """The changes of the last minute (every test's store starts empty)."""
    return changed(store, datetime.now(UTC) - timedelta(minutes=1))


class SyncOverAsync:
    """Runs an :class:`AsyncStore` as a :class:`Store`.

    Every coroutine runs on one event loop owned by the adapter, in its own
    thread, so connections bound to that loop stay valid and calls may come
    from any thread. ``close()`` closes the store, then stops the loop.
    """

    def __init__(self, store: AsyncStore | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._store = store
        self._closed = False

    def run(self, awaitable: Awaitable[T]) -> T:
        """Run ``awaitable`` on the adapter's loop and return its result."""

        async def wrap() -> T:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wrap(), self._loop).result()

    def attach(self, store: AsyncStore) -> None:
        """Use ``store`` (built on the adapter's loop with :meth:`run`, if it must be)."""
        self._store = store

    @property
    def store(self) -> AsyncStore:
        assert self._store is not None, "SyncOverAsync has no store attached"
        return self._store

    def get(self, token_id: str) -> TokenRecord | None:
        return self.run(self.store.get(token_id))

    def list_user(self, user_id: str) -> list[TokenRecord]:
        return self.run(self.store.list_user(user_id))

    def list_family(self, family_id: str) -> list[TokenRecord]:
        return self.run(self.store.list_family(family_id))

    def list_expiring(self, start: datetime, end: datetime) -> list[TokenRecord]:
        return self.run(self.store.list_expiring(start, end))

    def insert(self, record: TokenRecord) -> None:
        self.run(self.store.insert(record))

    def update(self, token_id: str, changes: Mapping[str, Any]) -> TokenRecord | None:
        return self.run(self.store.update(token_id, changes))

    def changes_since(self, since: datetime) -> list[tuple[str, datetime]]:
        return self.run(self.store.changes_since(since))

    def revoke(self, token_id: str, at: datetime) -> list[str]:
        return self.run(self.store.revoke(token_id, at))

    def revoke_family(self, family_id: str, at: datetime) -> list[str]:
        return self.run(self.store.revoke_family(family_id, at))

    def revoke_user(self, user_id: str, at: datetime) -> list[str]:
        return self.run(self.store.revoke_user(user_id, at))

    def rotate(self, old_id: str, new: TokenRecord, revoke_at: datetime) -> bool:
        return self.run(self.store.rotate(old_id, new, revoke_at))

    def touch(self, token_id: str, at: datetime, ip: str | None, keep_ips: int) -> bool | None:
        return self.run(self.store.touch(token_id, at, ip, keep_ips))

    def purge(self, before: datetime) -> list[str]:
        return self.run(self.store.purge(before))

    def purgeable(self, before: datetime) -> list[str]:
        return self.run(self.store.purgeable(before))

    def search(self, query: TokenQuery) -> list[TokenRecord]:
        return self.run(self.store.search(query))

    def append_log(self, entries: list[LogEntry]) -> None:
        self.run(self.store.append_log(entries))

    def read_log(self, query: LogQuery) -> list[LogEntry]:
        return self.run(self.store.read_log(query))

    def prune_log(self, before: datetime) -> int:
        return self.run(self.store.prune_log(before))

    def claim_notice(self, token_id: str, key: str, until: datetime) -> bool:
        return self.run(self.store.claim_notice(token_id, key, until))

    def close(self) -> None:
        """Close the store (once), stop the loop and join its thread."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._store is not None:
                self.run(self._store.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()


class StoreContract(OversightContract):
    """The behaviour every :class:`Store` must show. Needs a ``store`` fixture.
    The administration part (search, the log, notices) is :class:`OversightContract`."""

    # -- insert / get --------------------------------------------------------

    def test_is_a_store(self, store: Store) -> None:
        assert isinstance(store, Store)

    def test_roundtrip_every_field(self, store: Store) -> None:
        full = make_record(
            user_id="üser-1",
            name="déploy 🚀",
            description="CI token\nsecond line, \"quoted\" 'and' %s ?",
            scopes=("repo:read", "repo:write"),
            created_at=T0,
            expires_at=T0 + timedelta(days=30, microseconds=1),
            last_used_at=T0 + timedelta(hours=1, microseconds=7),
            last_used_ips=("203.0.113.9", "2001:db8::1"),
            revoked_at=T0 + timedelta(days=40),
            family_id="Fam000000001",
            rotated_from="Old000000001",
            allowed_cidrs=("10.0.0.0/8", "2001:db8::/32"),
            resources=("acme/*", "acme/web", "project:42"),
        )
        bare = make_record(description="", scopes=(), expires_at=None)
        store.insert(full)
        store.insert(bare)
        for record in (full, bare):
            got = fetch(store, record.id)
            assert got == record
            for field in ("scopes", "last_used_ips", "allowed_cidrs", "resources"):
                assert type(getattr(got, field)) is tuple or getattr(got, field) is None
        assert type(fetch(store, full.id).resources) is tuple
        got_bare = fetch(store, bare.id)
        assert got_bare.resources is None  # every resource
        assert got_bare.expires_at is None and got_bare.description == ""
        assert got_bare.family_id == bare.id and got_bare.rotated_from is None

    def test_get_unknown_is_none(self, store: Store) -> None:
        assert store.get("nosuchid0000") is None
        store.insert(make_record())
        assert store.get("nosuchid0000") is None
        assert store.get("") is None

    def test_other_timezones_and_naive_datetimes_come_back_aware_utc(self, store: Store) -> None:
        plus = timezone(timedelta(hours=5, minutes=30))
        naive = T0.replace(tzinfo=None)
        record = make_record(
            created_at=T0.astimezone(plus),
            expires_at=naive + timedelta(days=1),
            last_used_at=naive,
            revoked_at=(T0 + timedelta(days=2)).astimezone(plus),
        )
        store.insert(record)
        got = fetch(store, record.id)
        assert got.created_at == T0
        assert got.expires_at == T0 + timedelta(days=1)
        assert got.last_used_at == T0
        assert got.revoked_at == T0 + timedelta(days=2)
        live = make_record()
        store.insert(live)
        store.touch(live.id, naive + timedelta(hours=3), "192.0.2.1", 3)
        assert store.revoke(live.id, naive + timedelta(hours=4)) == [live.id]
        got = fetch(store, live.id)
        assert got.last_used_at == T0 + timedelta(hours=3)
        assert got.revoked_at == T0 + timedelta(hours=4)
        for listed in (*store.list_user("alice"), *store.list_family(live.family_id)):
            assert_aware_utc(listed)

    def test_duplicate_id_raises_and_changes_nothing(self, store: Store) -> None:
        first = make_record()
        store.insert(first)
        clash = make_record(id=first.id, user_id="bob", name="other")
        with pytest.raises(Exception):
            store.insert(clash)
        assert store.get(first.id) == first
        assert store.list_user("bob") == []

    # -- listings ------------------------------------------------------------

    def test_list_user_oldest_first_every_state_isolated(self, store: Store) -> None:
        mid = make_record(created_at=T0 + timedelta(hours=1), revoked_at=T0 + timedelta(hours=2))
        old = make_record(created_at=T0, expires_at=T0 + US)  # expired
        new = make_record(created_at=T0 + timedelta(days=1))
        tie_b = make_record(id="ZZtie0000000", created_at=T0 + timedelta(days=2))
        tie_a = make_record(id="AAtie0000000", created_at=T0 + timedelta(days=2))
        bob = make_record(user_id="bob", created_at=T0 - timedelta(days=1))
        for record in (new, tie_b, mid, bob, old, tie_a):
            store.insert(record)
        assert store.list_user("alice") == [old, mid, new, tie_a, tie_b]
        assert store.list_user("bob") == [bob]
        assert store.list_user("carol") == []

    def test_list_family_oldest_first(self, store: Store) -> None:
        root = make_record(created_at=T0, revoked_at=T0 + timedelta(days=1))
        child = make_record(created_at=T0 + timedelta(days=1), family_id=root.id, rotated_from=root.id)
        grandchild = make_record(created_at=T0 + timedelta(days=2), family_id=root.id, rotated_from=child.id)
        stranger = make_record(created_at=T0 + timedelta(hours=5))
        for record in (grandchild, stranger, root, child):
            store.insert(record)
        assert store.list_family(root.id) == [root, child, grandchild]
        assert store.list_family(stranger.id) == [stranger]
        assert store.list_family("nosuchfamily") == []

    def test_list_expiring_window(self, store: Store) -> None:
        start, end = T0 + timedelta(days=1), T0 + timedelta(days=8)
        at_start = make_record(expires_at=start)
        just_after = make_record(expires_at=start + US)
        at_end = make_record(expires_at=end, user_id="bob")
        past_end = make_record(expires_at=end + US)
        never = make_record(expires_at=None)
        revoked_at_start = make_record(expires_at=start + timedelta(days=1), revoked_at=start)
        revoked_before = make_record(expires_at=start + timedelta(days=2), revoked_at=T0)
        scheduled = make_record(expires_at=start + timedelta(days=3), revoked_at=start + US)
        for record in (at_start, just_after, at_end, past_end, never, revoked_at_start,
                       revoked_before, scheduled):  # fmt: skip
            store.insert(record)
        assert store.list_expiring(start, end) == [just_after, scheduled, at_end]
        assert store.list_expiring(end, end + timedelta(days=1)) == [past_end]
        assert store.list_expiring(T0 - timedelta(days=1), T0) == []

    # -- names -----------------------------------------------------------------

    def test_live_duplicate_name_is_taken(self, store: Store) -> None:
        first = make_record(name="ci", expires_at=T0 - timedelta(days=1))  # expired is still live
        store.insert(first)
        second = make_record(name="ci")
        with pytest.raises(NameTaken) as caught:
            store.insert(second)
        assert caught.value.name == "ci"
        assert store.get(second.id) is None
        assert store.list_user("alice") == [first]
        store.insert(make_record(name="ci", user_id="bob"))  # names are per user
        store.insert(make_record(name="CI"))  # and case-sensitive

    def test_name_is_free_after_revoke_or_scheduled_revoke(self, store: Store) -> None:
        first = make_record(name="ci")
        store.insert(first)
        assert store.revoke(first.id, T0) == [first.id]
        second = make_record(name="ci", revoked_at=T0 + timedelta(days=7))  # scheduled
        store.insert(second)
        third = make_record(name="ci")
        store.insert(third)
        assert [r.id for r in store.list_user("alice")] == sorted([first.id, second.id, third.id])
        with pytest.raises(NameTaken):
            store.insert(make_record(name="ci"))

    # -- update ------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("name", "renamed"),
            ("description", "now described"),
            ("description", ""),
            ("expires_at", T0 + timedelta(days=90, microseconds=3)),
            ("expires_at", None),
            ("scopes", ("admin", "repo:read", "user:email")),
            ("scopes", ()),
            ("allowed_cidrs", ("192.0.2.0/24",)),
            ("resources", ("acme/web", "project:*")),
            ("resources", None),
            ("hash", "$argon2id$v=19$m=65536,t=3,p=4$bmV3c2FsdA$rehashed"),
        ],
    )
    def test_update_each_field(self, store: Store, field: str, value: Any) -> None:
        record = make_record(
            description="old", expires_at=T0 + timedelta(days=1), scopes=("a",),
            allowed_cidrs=("10.0.0.0/8",), resources=("acme/*",),
        )  # fmt: skip
        store.insert(record)
        expected = record.evolve(**{field: value})
        assert store.update(record.id, {field: value}) == expected
        assert fetch(store, record.id) == expected

    def test_update_covers_every_updatable_field(self) -> None:
        tested = {"name", "description", "expires_at", "scopes", "allowed_cidrs", "resources", "hash"}
        assert tested == UPDATABLE_FIELDS

    def test_update_several_fields_and_no_fields(self, store: Store) -> None:
        record = make_record()
        store.insert(record)
        changes = {"name": "n2", "scopes": ("x", "y"), "expires_at": T0 + timedelta(days=2)}
        expected = record.evolve(**changes)
        assert store.update(record.id, changes) == expected
        assert store.update(record.id, {}) == expected
        assert store.get(record.id) == expected

    def test_update_not_live_or_unknown_is_none(self, store: Store) -> None:
        revoked = make_record(revoked_at=T0)
        scheduled = make_record(revoked_at=T0 + timedelta(days=365))
        store.insert(revoked)
        store.insert(scheduled)
        for record in (revoked, scheduled):
            assert store.update(record.id, {"description": "changed"}) is None
            assert store.update(record.id, {}) is None
            assert store.get(record.id) == record
        assert store.update("nosuchid0000", {"description": "x"}) is None

    @pytest.mark.parametrize(
        "changes",
        [
            {"user_id": "mallory"},
            {"revoked_at": None},
            {"id": "other"},
            {"last_used_at": T0},
            {"family_id": "x"},
            {"description": "fine", "created_at": T0},
        ],
    )
    def test_update_bad_field_is_value_error(self, store: Store, changes: dict[str, Any]) -> None:
        record = make_record(revoked_at=None)
        store.insert(record)
        with pytest.raises(ValueError):
            store.update(record.id, changes)
        assert store.get(record.id) == record

    def test_rename_clash_is_name_taken(self, store: Store) -> None:
        a, b = make_record(name="a"), make_record(name="b")
        gone = make_record(name="gone", revoked_at=T0)
        bobs = make_record(name="bobs", user_id="bob")
        for record in (a, b, gone, bobs):
            store.insert(record)
        with pytest.raises(NameTaken):
            store.update(a.id, {"name": "b", "description": "not applied"})
        assert store.get(a.id) == a
        assert store.update(a.id, {"name": "a"}) == a  # its own name
        assert store.update(a.id, {"name": "gone"}) == a.evolve(name="gone")
        assert store.update(b.id, {"name": "bobs"}) == b.evolve(name="bobs")

    # -- revoke ------------------------------------------------------------------

    def test_revoke_is_idempotent(self, store: Store) -> None:
        record = make_record()
        store.insert(record)
        assert store.revoke(record.id, T0 + timedelta(hours=1)) == [record.id]
        assert store.revoke(record.id, T0 + timedelta(hours=1)) == []
        assert store.revoke(record.id, T0 + timedelta(hours=2)) == []
        assert store.get(record.id) == record.evolve(revoked_at=T0 + timedelta(hours=1))
        assert store.revoke("nosuchid0000", T0) == []

    def test_revoke_cuts_a_scheduled_revocation_short(self, store: Store) -> None:
        record = make_record(revoked_at=T0 + timedelta(hours=1))
        store.insert(record)
        assert store.revoke(record.id, T0 + timedelta(hours=2)) == []
        assert store.get(record.id) == record
        assert store.revoke(record.id, T0) == [record.id]
        assert store.get(record.id) == record.evolve(revoked_at=T0)

    def _chain(self, store: Store, *revoked_at: datetime | None, **fields: Any) -> list[TokenRecord]:
        """A rotation chain, oldest first, one day apart, ending at T0, with these revoked_at."""
        chain: list[TokenRecord] = []
        for n, when in enumerate(revoked_at):
            created = T0 - timedelta(days=len(revoked_at) - 1 - n)
            lineage = {"family_id": chain[0].id, "rotated_from": chain[-1].id} if chain else {}
            chain.append(make_record(created_at=created, revoked_at=when, **lineage, **fields))
            store.insert(chain[-1])
        return chain

    def test_revoke_takes_the_predecessors_in_grace_along(self, store: Store) -> None:
        at = T0 + timedelta(minutes=1)
        done, grace1, grace2, new = self._chain(
            store, T0 - timedelta(days=2), T0 + timedelta(hours=1), T0 + timedelta(hours=2), None
        )
        elsewhere = make_record(created_at=T0 - timedelta(days=5), revoked_at=T0 + timedelta(hours=1))
        store.insert(elsewhere)
        assert sorted(store.revoke(new.id, at)) == sorted([grace1.id, grace2.id, new.id])
        for record in (grace1, grace2, new):
            assert fetch(store, record.id) == record.evolve(revoked_at=at)
        assert store.get(done.id) == done  # its grace had ended: unchanged
        assert store.get(elsewhere.id) == elsewhere  # another family
        assert store.revoke(new.id, at) == []

    def test_revoke_leaves_the_successors(self, store: Store) -> None:
        old, middle, new = self._chain(store, T0 + timedelta(hours=1), T0 + timedelta(hours=2), None)
        assert sorted(store.revoke(middle.id, T0)) == sorted([old.id, middle.id])
        assert store.get(new.id) == new
        assert store.revoke(old.id, T0) == []

    def test_revoke_again_ends_the_grace_a_partial_revoke_left(self, store: Store) -> None:
        """The state a crash between two writes left (successor revoked, predecessor
        still in grace): revoking the successor again revokes the predecessor."""
        old, new = self._chain(store, T0 + timedelta(hours=1), T0)
        at = T0 + timedelta(minutes=1)
        assert store.revoke(new.id, at) == [old.id]
        assert store.get(old.id) == old.evolve(revoked_at=at)
        assert store.get(new.id) == new  # revoked at T0 already: unchanged
        assert store.revoke(new.id, at) == []

    def test_revoke_follows_rotated_from_where_the_clock_cannot_tell(self, store: Store) -> None:
        # Created in the same microsecond: the link, not the clock, says which came first.
        old = make_record(revoked_at=T0 + timedelta(hours=1))
        new = make_record(family_id=old.id, rotated_from=old.id)
        # A successor made on a host whose clock runs behind: "older" than its predecessor.
        skewed_old = make_record(created_at=T0 + timedelta(seconds=2), revoked_at=T0 + timedelta(hours=1))
        skewed_new = make_record(family_id=skewed_old.id, rotated_from=skewed_old.id)
        for record in (old, new, skewed_old, skewed_new):
            store.insert(record)
        assert store.revoke(old.id, T0) == [old.id]
        assert store.get(new.id) == new
        assert sorted(store.revoke(skewed_new.id, T0)) == sorted([skewed_old.id, skewed_new.id])

    def test_revoke_reaches_predecessors_past_a_purged_link(self, store: Store) -> None:
        first = make_record(created_at=T0 - timedelta(days=2), revoked_at=T0 + timedelta(hours=1))
        # its successor, rotated without grace, was purged; this one replaced that
        new = make_record(family_id=first.id, rotated_from="Purged000000")
        live_first = make_record(created_at=T0 - timedelta(days=1))  # anomalous, but revocable
        live_new = make_record(family_id=live_first.id, rotated_from=live_first.id)
        for record in (first, new, live_first, live_new):
            store.insert(record)
        assert sorted(store.revoke(new.id, T0)) == sorted([first.id, new.id])
        assert sorted(store.revoke(live_new.id, T0)) == sorted([live_first.id, live_new.id])

    def test_revoke_survives_a_rotated_from_cycle(self, store: Store) -> None:
        a = make_record(id="Cyc000000001", rotated_from="Cyc000000002", revoked_at=T0 + timedelta(hours=1))
        b = make_record(id="Cyc000000002", family_id=a.id, rotated_from=a.id)
        store.insert(a)
        store.insert(b)
        assert sorted(store.revoke(b.id, T0)) == sorted([a.id, b.id])

    def test_revoke_family_returns_exactly_the_changed_ids(self, store: Store) -> None:
        root = make_record(revoked_at=T0 - timedelta(days=1))
        grace = make_record(family_id=root.id, revoked_at=T0 + timedelta(hours=1))
        live = make_record(family_id=root.id)
        later = make_record(family_id=root.id, revoked_at=T0 - US)
        other = make_record()
        for record in (root, grace, live, later, other):
            store.insert(record)
        assert sorted(store.revoke_family(root.id, T0)) == sorted([grace.id, live.id])
        assert store.get(grace.id) == grace.evolve(revoked_at=T0)
        assert store.get(live.id) == live.evolve(revoked_at=T0)
        assert store.get(root.id) == root
        assert store.get(later.id) == later
        assert store.get(other.id) == other
        assert store.revoke_family(root.id, T0) == []
        assert store.revoke_family("nosuchfamily", T0) == []

    def test_revoke_user_returns_exactly_the_changed_ids(self, store: Store) -> None:
        live = make_record()
        grace = make_record(revoked_at=T0 + timedelta(minutes=5))
        done = make_record(revoked_at=T0)
        bob = make_record(user_id="bob")
        for record in (live, grace, done, bob):
            store.insert(record)
        at = T0 + timedelta(minutes=1)
        assert sorted(store.revoke_user("alice", at)) == sorted([live.id, grace.id])
        assert store.get(live.id) == live.evolve(revoked_at=at)
        assert store.get(grace.id) == grace.evolve(revoked_at=at)
        assert store.get(done.id) == done
        assert store.get(bob.id) == bob
        assert store.revoke_user("alice", at) == []
        assert store.revoke_user("nobody", at) == []

    # -- rotate ------------------------------------------------------------------

    def test_rotate(self, store: Store) -> None:
        old = make_record(name="ci", scopes=("repo",))
        store.insert(old)
        new = make_record(
            name="ci", scopes=("repo",), family_id=old.family_id, rotated_from=old.id,
            created_at=T0 + timedelta(days=1),
        )  # fmt: skip
        grace_end = T0 + timedelta(days=1, hours=1)
        assert store.rotate(old.id, new, grace_end) is True
        assert store.get(old.id) == old.evolve(revoked_at=grace_end)
        assert store.get(new.id) == new
        assert store.list_family(old.id) == [old.evolve(revoked_at=grace_end), new]
        # the old token is no longer live: it cannot be rotated again
        again = make_record(name="ci", family_id=old.id, rotated_from=old.id)
        assert store.rotate(old.id, again, T0 + timedelta(days=2)) is False
        assert store.get(again.id) is None
        assert store.get(old.id) == old.evolve(revoked_at=grace_end)

    def test_resources_unrestricted_then_restricted_then_unrestricted(self, store: Store) -> None:
        record = make_record()
        store.insert(record)
        limited = store.update(record.id, {"resources": ["acme/web"]})
        assert limited is not None and limited.resources == ("acme/web",)
        assert fetch(store, record.id).resources == ("acme/web",)
        everything = store.update(record.id, {"resources": None})
        assert everything is not None and everything.resources is None
        assert fetch(store, record.id).resources is None

    def test_rotate_keeps_what_the_new_record_says_about_resources(self, store: Store) -> None:
        old = make_record(name="ci", resources=("acme/*",))
        store.insert(old)
        new = make_record(name="ci", family_id=old.id, rotated_from=old.id, resources=("acme/*",))
        assert store.rotate(old.id, new, T0 + timedelta(hours=1)) is True
        assert fetch(store, new.id).resources == ("acme/*",)

    def test_rotate_revoked_or_missing_writes_nothing(self, store: Store) -> None:
        revoked = make_record(revoked_at=T0 - timedelta(days=1))
        store.insert(revoked)
        for old_id in (revoked.id, "nosuchid0000"):
            new = make_record(rotated_from=old_id)
            assert store.rotate(old_id, new, T0) is False
            assert store.get(new.id) is None
        assert store.get(revoked.id) == revoked
        assert store.list_user("alice") == [revoked]

    def test_rotate_failing_insert_leaves_old_live(self, store: Store) -> None:
        old, other = make_record(name="old"), make_record(name="other")
        store.insert(old)
        store.insert(other)
        with pytest.raises(NameTaken):
            store.rotate(old.id, make_record(name="other"), T0)
        with pytest.raises(Exception):
            store.rotate(old.id, make_record(id=other.id, name="old"), T0)
        assert store.get(old.id) == old
        assert store.get(other.id) == other
        assert store.list_user("alice") == [old, other]

    # -- changes_since (the revocation feed) ---------------------------------------

    def test_changes_since_reports_every_kind_of_validity_change(self, store: Store) -> None:
        at = datetime.now(UTC)
        revoked = make_record()
        family = [make_record(family_id="F0000000000a", created_at=T0 + i * US) for i in range(2)]
        bob = [make_record(user_id="bob"), make_record(user_id="bob")]
        bob_gone = make_record(user_id="bob", revoked_at=at - timedelta(days=1))  # not changed again
        old = make_record(name="ci")
        new = make_record(name="ci", family_id=old.id, rotated_from=old.id, created_at=T0 + US)
        updated = {field: make_record() for field in UPDATABLE_FIELDS}
        quiet = [make_record(), make_record(revoked_at=T0)]  # touched; inserted revoked
        for record in (revoked, *family, *bob, bob_gone, old, *updated.values(), *quiet):
            store.insert(record)
        assert recent(store) == {}
        start = datetime.now(UTC)

        assert store.revoke(revoked.id, at) == [revoked.id]
        assert sorted(store.revoke_family("F0000000000a", at)) == ids(family)
        assert sorted(store.revoke_user("bob", at)) == sorted(ids(bob))
        assert store.rotate(old.id, new, at + timedelta(hours=1)) is True
        values = {
            "name": "renamed", "description": "described", "expires_at": T0 + timedelta(days=3),
            "scopes": ("x",), "allowed_cidrs": ("192.0.2.0/24",), "hash": "$argon2id$rehashed",
            "resources": ("acme/web",),
        }  # fmt: skip
        for field, record in updated.items():
            assert store.update(record.id, {field: values[field]}) is not None
        store.touch(quiet[0].id, at, "192.0.2.1", 3)
        # writes that change nothing stamp nothing
        assert store.revoke(revoked.id, at) == []
        assert store.rotate(revoked.id, make_record(), at) is False
        assert store.update(revoked.id, {"scopes": ("y",)}) is None
        end = datetime.now(UTC)

        got = recent(store)
        validity = {updated[f].id for f in VALIDITY_FIELDS}
        assert set(got) == {revoked.id, *ids(family), *ids(bob), old.id, *validity}
        for stamp in got.values():
            assert start - CLOCK_SLACK <= stamp <= end + CLOCK_SLACK

    def test_changes_since_bound_is_inclusive_and_the_future_is_empty(self, store: Store) -> None:
        record = make_record()
        store.insert(record)
        store.revoke(record.id, datetime.now(UTC))
        ((token_id, stamp),) = recent(store).items()
        assert token_id == record.id
        assert changed(store, stamp) == {record.id: stamp}
        assert changed(store, stamp + US) == {}
        assert changed(store, datetime.now(UTC) + CLOCK_SLACK) == {}

    def test_changes_since_a_second_change_moves_the_stamp(self, store: Store) -> None:
        record, other = make_record(), make_record()
        store.insert(record)
        store.insert(other)
        assert store.update(record.id, {"scopes": ("a",), "description": "both"}) is not None
        first = recent(store)[record.id]
        time.sleep(0.01)  # stamps may be as coarse as a millisecond (SQLite's clock)
        store.update(other.id, {"expires_at": T0})
        store.revoke(record.id, datetime.now(UTC))
        got = recent(store)
        assert set(got) == {record.id, other.id}
        assert got[record.id] > first
        assert changed(store, got[record.id]).keys() >= {record.id}
        assert record.id not in changed(store, got[record.id] + US)

    # -- touch -------------------------------------------------------------------

    def test_touch_orders_dedupes_and_caps_ips(self, store: Store) -> None:
        record = make_record()
        store.insert(record)

        def touched(minutes: int, ip: str | None, keep: int = 3) -> TokenRecord:
            store.touch(record.id, T0 + timedelta(minutes=minutes), ip, keep)
            return fetch(store, record.id)

        first = touched(1, "192.0.2.1")
        assert first == record.evolve(last_used_at=T0 + timedelta(minutes=1), last_used_ips=("192.0.2.1",))
        touched(2, "192.0.2.2")
        assert touched(3, "192.0.2.1").last_used_ips == ("192.0.2.1", "192.0.2.2")
        touched(4, "2001:db8::1")
        assert touched(5, "192.0.2.3").last_used_ips == ("192.0.2.3", "2001:db8::1", "192.0.2.1")
        got = touched(6, None)
        assert got.last_used_at == T0 + timedelta(minutes=6)
        assert got.last_used_ips == ("192.0.2.3", "2001:db8::1", "192.0.2.1")
        got = touched(7, "192.0.2.1", keep=2)
        assert got.last_used_ips == ("192.0.2.1", "192.0.2.3")
        assert got.evolve(last_used_at=None, last_used_ips=()) == record
        store.touch("nosuchid0000", T0, "192.0.2.1", 3)  # no error
        assert store.get("nosuchid0000") is None

    # -- purge -------------------------------------------------------------------

    def test_purge_boundaries(self, store: Store) -> None:
        before = T0 + timedelta(days=10)
        revoked_at = make_record(name="n", revoked_at=before)
        revoked_after = make_record(revoked_at=before + US)
        expired_at = make_record(expires_at=before)
        expired_long_ago = make_record(expires_at=T0, revoked_at=T0)
        expires_after = make_record(expires_at=before + US)
        forever = make_record()
        records = (revoked_at, revoked_after, expired_at, expired_long_ago, expires_after, forever)
        for record in records:
            store.insert(record)
        gone = {revoked_at.id, expired_at.id, expired_long_ago.id}
        assert sorted(store.purge(before)) == sorted(gone)
        for record in records:
            assert store.get(record.id) == (None if record.id in gone else record)
        assert store.purge(before) == []
        assert [r.id for r in store.list_user("alice")] == [
            revoked_after.id, expires_after.id, forever.id
        ]  # fmt: skip

    def test_purgeable_lists_what_purge_then_deletes(self, store: Store) -> None:
        before = T0 + timedelta(days=10)
        records = (
            make_record(name="n", revoked_at=before),
            make_record(revoked_at=before + US),
            make_record(expires_at=before),
            make_record(expires_at=T0, revoked_at=T0),
            make_record(expires_at=before + US),
            make_record(revoked_at=T0, expires_at=before + US),
            make_record(),
        )
        for record in records:
            store.insert(record)
        assert store.purgeable(T0 - US) == []
        listed = store.purgeable(before)
        assert len(listed) == len(set(listed)) == 4
        assert store.purgeable(before) == listed  # deletes nothing, whatever the number of calls
        for record in records:
            assert store.get(record.id) == record
        assert sorted(store.purge(before)) == sorted(listed)
        assert store.purgeable(before) == []
        assert {r.id for r in store.list_user("alice")} == {r.id for r in records} - set(listed)

    # -- concurrency ---------------------------------------------------------------

    def test_concurrent_writers_lose_nothing(self, store: Store) -> None:
        """8 threads insert, revoke and rotate at once; all race to rotate one token."""
        contested = make_record(name="contested")
        store.insert(contested)
        per_thread = 12

        def work(worker: int) -> tuple[list[str], bool]:
            mine = [make_record(user_id=f"user{worker}", name=f"t{i}") for i in range(per_thread)]
            for record in mine:
                store.insert(record)
            for record in mine[:4]:
                assert store.revoke(record.id, T0) == [record.id]
            for record in mine[4:8]:
                successor = make_record(
                    user_id=record.user_id, name=record.name, family_id=record.id,
                    rotated_from=record.id,
                )  # fmt: skip
                assert store.rotate(record.id, successor, T0)
                mine.append(successor)
            rival = make_record(name="contested", family_id=contested.id)
            return [r.id for r in mine], store.rotate(contested.id, rival, T0)

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(work, range(8)))
        assert sum(won for _, won in results) == 1
        for worker, (made, _) in enumerate(results):
            listed = store.list_user(f"user{worker}")
            assert sorted(r.id for r in listed) == sorted(made)
            assert sum(r.revoked_at is None for r in listed) == per_thread - 4
        family = store.list_family(contested.id)
        assert len(family) == 2
        assert [r.revoked_at is None for r in family] == [False, True]
