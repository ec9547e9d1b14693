"""Fine-grained tokens: resource ids, ``Principal.allows``, the policy, the manager and both caches."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from pat_middleware import MemoryStore, PATAuth, Policy, PolicyViolation
from pat_middleware.cache.local import CachedToken
from pat_middleware.cache.redis import RedisCache
from pat_middleware.core.models import Principal, TokenRecord, require
from pat_middleware.core.resources import covers, is_resource, normalize_resources, within
from pat_middleware.errors import InsufficientScope
from tests.helpers import FAST_ARGON2, FakeClock

# -- the rule -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "resource", ["acme/web", "project:42", "a", "acme/*", "acme:*", "x" * 255, "acme/web/wiki", "org:acme/repo:*"]
)
def test_valid_resource_ids(resource: str) -> None:
    assert is_resource(resource)


@pytest.mark.parametrize(
    "resource", ["", "x" * 256, "acme web", "acme/\t", "*", "/*", ":*", "acme*", "acme/**", "acme/*/x", "é", 42, None]
)
def test_invalid_resource_ids(resource: object) -> None:
    assert not is_resource(resource)


@pytest.mark.parametrize(
    ("resource", "covered"),
    [
        ("acme/web", True),  # under acme/*
        ("acme/web/wiki", True),
        ("acme", False),  # the wildcard names what is below acme/, not acme itself
        ("acme/", False),
        ("acmeco/web", False),
        ("project:42", True),  # listed
        ("project:421", False),
        ("project:4", False),
        ("other/web", False),
        ("acme/web page", False),  # malformed: covered by nothing
        ("", False),
    ],
)
def test_covers_exact_ids_and_prefix_wildcards(resource: str, covered: bool) -> None:
    assert covers(frozenset({"acme/*", "project:42"}), resource) is covered
    assert covers(None, resource) is True  # a token for every resource


def test_within_is_narrowing() -> None:
    assert within(None, None) and within(None, ("a",))
    assert not within(("a",), None)  # every resource is wider than any list
    assert within(("acme/*",), ("acme/web", "acme/api/*"))
    assert not within(("acme/web",), ("acme/*",))
    assert not within(("acme/web",), ("acme/web", "acme/api"))


def test_normalize_resources() -> None:
    assert normalize_resources(None) is None
    assert normalize_resources(["b", "a", "b"]) == ("a", "b")
    assert normalize_resources("acme/web") == ("acme/web",)  # one id, not its characters
    with pytest.raises(ValueError, match="at least one"):
        normalize_resources([])
    with pytest.raises(ValueError, match="invalid resource"):
        normalize_resources(["acme web"])
    with pytest.raises(ValueError, match="at most 100"):
        normalize_resources([f"r{i}" for i in range(101)])


def _principal(resources: frozenset[str] | None) -> Principal:
    return Principal("alice", "K00000000001", "ci", frozenset({"repo:read", "admin:*"}), None, resources)


def test_principal_allows_checks_the_scope_then_the_resource() -> None:
    limited = _principal(frozenset({"acme/web"}))
    assert limited.allows("repo:read", "acme/web")
    assert not limited.allows("repo:read", "acme/api")
    assert not limited.allows("repo:write", "acme/web")
    assert limited.allows("admin:org", "acme/web")  # scope wildcards still apply
    assert limited.allows("repo:read")  # a route about no resource: the scope only
    everything = _principal(None)
    assert everything.allows("repo:read", "anything/at:all") and everything.resources is None


def test_require_refuses_another_resource_without_naming_it() -> None:
    limited = _principal(frozenset({"acme/web"}))
    assert require(limited, ["repo:read"], resource="acme/web") is limited
    with pytest.raises(InsufficientScope) as refused:
        require(limited, ["repo:read"], resource="acme/secret-project")
    assert refused.value.description == "The token is not valid for this resource"
    assert "secret-project" not in refused.value.challenge("api")
    assert b"secret-project" not in refused.value.body()
    with pytest.raises(InsufficientScope, match="scopes"):  # missing scopes: the usual answer
        require(limited, ["repo:write"], resource="acme/web")


# -- the policy and the manager ----------------------------------------------------------


@pytest.fixture
def auth(clock: FakeClock) -> Iterator[PATAuth]:
    allowed = {"alice": ["acme/*", "project:42"], "bob": None}
    a = PATAuth(MemoryStore(), hasher=FAST_ARGON2, clock=clock, policy=Policy(allowed_resources=allowed.get))
    yield a
    a.close()


def test_create_with_and_without_resources(auth: PATAuth) -> None:
    everything = auth.manager.create("alice", "all", ["repo:read"])
    assert everything.record.resources is None
    assert auth.verify(everything.token).resources is None
    limited = auth.manager.create("alice", "web", ["repo:read"], resources=["acme/web", "project:42", "acme/web"])
    assert limited.record.resources == ("acme/web", "project:42")
    assert auth.manager.get(limited.record.id).resources == ("acme/web", "project:42")
    principal = auth.verify(limited.token)
    assert principal.resources == frozenset({"acme/web", "project:42"})
    assert principal.allows("repo:read", "acme/web") and not principal.allows("repo:read", "acme/api")
    assert limited.record.public_dict(datetime.now(UTC))["resources"] == ["acme/web", "project:42"]


@pytest.mark.parametrize(
    ("user", "resources", "message"),
    [
        ("alice", ["other/repo"], "resources not allowed: other/repo"),
        ("alice", ["acme web"], "invalid resource"),
        ("alice", [], "at least one"),
        ("carol", ["anything"], None),  # the callable answered None: any resource
        ("bob", ["anything"], None),
    ],
)
def test_policy_allowed_resources(auth: PATAuth, user: str, resources: list[str], message: str | None) -> None:
    if message is None:
        assert auth.manager.create(user, "t", resources=resources).record.resources == tuple(resources)
        return
    with pytest.raises(PolicyViolation, match=message) as refused:
        auth.manager.create(user, "t", resources=resources)
    assert refused.value.field == "resources"


def test_update_narrows_widens_within_policy_and_invalidates_the_cache(auth: PATAuth) -> None:
    new = auth.manager.create("alice", "ci", ["repo:read"], resources=["acme/*"])
    assert auth.verify(new.token).allows("repo:read", "acme/api")
    narrowed = auth.manager.update(new.record.id, resources=["acme/web"])
    assert narrowed.resources == ("acme/web",)
    assert not auth.verify(new.token).allows("repo:read", "acme/api")  # the cached principal was dropped
    widened = auth.manager.update(new.record.id, resources=["acme/*", "project:42"])
    assert widened.resources == ("acme/*", "project:42")
    with pytest.raises(PolicyViolation, match="not allowed") as refused:
        auth.manager.update(new.record.id, resources=["other/x"])
    assert refused.value.field == "resources"
    assert auth.manager.update(new.record.id, resources=None).resources is None
    assert auth.verify(new.token).resources is None
    unchanged = auth.manager.update(new.record.id, name="renamed")
    assert unchanged.resources is None


def test_narrowing_is_allowed_even_outside_a_changed_policy(clock: FakeClock) -> None:
    allowed: dict[str, list[str]] = {"alice": ["acme/*"]}
    auth = PATAuth(MemoryStore(), hasher=FAST_ARGON2, clock=clock, policy=Policy(allowed_resources=allowed.get))
    new = auth.manager.create("alice", "ci", resources=["acme/web", "acme/api"])
    allowed["alice"] = ["project:*"]  # the host took acme away
    assert auth.manager.update(new.record.id, resources=["acme/web"]).resources == ("acme/web",)
    auth.close()


def test_rotation_keeps_the_resources(auth: PATAuth) -> None:
    old = auth.manager.create("alice", "ci", ["repo:read"], resources=["project:42"])
    new = auth.manager.rotate(old.record.id)
    assert new.record.resources == ("project:42",)
    assert auth.verify(new.token).resources == frozenset({"project:42"})


# -- the caches ----------------------------------------------------------------------------


def _entry(resources: frozenset[str] | None) -> CachedToken:
    return CachedToken(
        principal=_principal(resources),
        digest=b"\x01" * 32,
        verifier="$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
        expires_at=None,
        revokes_at=None,
        networks=(ipaddress.ip_network("10.0.0.0/8"),),
    )


def test_shared_entry_version_1_for_every_resource_version_2_when_limited() -> None:
    everything, limited = _entry(None), _entry(frozenset({"acme/*", "project:42"}))
    data = json.loads(everything.to_bytes())
    assert data[0] == 1 and len(data) == 10  # what older processes read, unchanged
    assert CachedToken.from_bytes(everything.to_bytes()) == everything
    data = json.loads(limited.to_bytes())
    assert data[0] == 2 and data[10] == ["acme/*", "project:42"]
    assert CachedToken.from_bytes(limited.to_bytes()) == limited


def test_an_older_reader_cannot_take_a_limited_entry_for_an_unlimited_one() -> None:
    """Release 0.x's reader: exactly ten fields and version 1, else ValueError (a miss)."""

    def old_reader(raw: bytes) -> list[object]:
        version, *rest = json.loads(raw)
        if version != 1 or len(rest) != 9:
            raise ValueError("unknown entry version")
        return rest

    assert old_reader(_entry(None).to_bytes())
    with pytest.raises(ValueError):
        old_reader(_entry(frozenset({"acme/web"})).to_bytes())


@pytest.mark.parametrize(
    "data",
    [
        b'[2,"u","i","n",[],"00","v",null,null,[]]',  # version 2 without its resources
        b'[2,"u","i","n",[],"00","v",null,null,[],"acme/web"]',  # not a list
        b'[2,"u","i","n",[],"00","v",null,null,[],[1]]',
        b'[1,"u","i","n",[],"00","v",null,null,[],["acme/web"]]',  # version 1 with an 11th field
        b'[3,"u","i","n",[],"00","v",null,null,[],["acme/web"]]',
    ],
)
def test_corrupt_version_2_entries_are_value_errors(data: bytes) -> None:
    with pytest.raises(ValueError):
        CachedToken.from_bytes(data)


class CountingStore(MemoryStore):
    """A memory store that counts lookups by id."""

    gets = 0

    def get(self, token_id: str) -> TokenRecord | None:
        self.gets += 1
        return super().get(token_id)


def test_the_redis_entry_carries_the_resources_to_another_process(
    clock: FakeClock, redis_url: str, redis_prefix: str
) -> None:
    store = CountingStore()
    first = PATAuth(store, cache=RedisCache(redis_url, prefix=redis_prefix), hasher=FAST_ARGON2, clock=clock)
    second = PATAuth(store, cache=RedisCache(redis_url, prefix=redis_prefix), hasher=FAST_ARGON2, clock=clock)
    try:
        limited = first.manager.create("alice", "ci", ["repo:read"], resources=["acme/web"])
        assert first.verify(limited.token).resources == frozenset({"acme/web"})  # fills Redis
        before = store.gets
        principal = second.verify(limited.token)
        assert store.gets == before  # answered from the Redis entry
        assert principal.resources == frozenset({"acme/web"})
        assert not principal.allows("repo:read", "acme/api")
    finally:
        first.close()
        second.close()
