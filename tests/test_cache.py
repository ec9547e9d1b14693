"""The in-process cache and the shared-cache entry format (no I/O)."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

import pytest

from pat_middleware.cache.local import CachedToken, LocalCache
from pat_middleware.core.models import Principal

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def entry(**overrides: object) -> CachedToken:
    fields: dict[str, object] = {
        "principal": Principal("alice", "K00000000001", "ci", frozenset({"a", "b"}), NOW),
        "digest": b"\x01" * 32,
        "verifier": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
        "expires_at": NOW.timestamp(),
        "revokes_at": None,
        "networks": (ipaddress.ip_network("10.0.0.0/8"),),
    }
    fields.update(overrides)
    return CachedToken(**fields)  # type: ignore[arg-type]


def test_entries_round_trip_through_bytes() -> None:
    original = entry()
    assert CachedToken.from_bytes(original.to_bytes()) == original
    assert b"argon2id" in original.to_bytes()  # the verifier string, never a secret
    never = entry(expires_at=None, networks=(), principal=Principal("bob", "K00000000002", "x", frozenset(), None))
    assert CachedToken.from_bytes(never.to_bytes()) == never
    assert never.valid_until == float("inf")
    assert entry(revokes_at=NOW.timestamp() - 5).valid_until == NOW.timestamp() - 5


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe",
        b"{}",
        b"[]",
        b'[2,"u","i","n",[],"00","v",null,null,[]]',
        b'[1,1,"i","n",[],"00","v",null,null,[]]',
        b'[1,"u","i","n",[1],"00","v",null,null,[]]',
        b'[1,"u","i","n",[],"zz","v",null,null,[]]',
        b'[1,"u","i","n",[],"00","v",null,null,["not a network"]]',
        b'[1,"u","i","n",[],"00","v","soon",null,[]]',
    ],
)
def test_corrupt_entries_are_value_errors(data: bytes) -> None:
    with pytest.raises(ValueError):
        CachedToken.from_bytes(data)


def test_local_cache_is_bounded() -> None:
    cache = LocalCache(max_entries=3)
    for i in range(10):
        e = entry(principal=Principal("u", f"K{i:011d}", "n", frozenset(), None))
        assert cache.put(e, 1e12, cache.generation)
    assert [cache.get(f"K{i:011d}") is not None for i in range(10)] == [False] * 7 + [True] * 3
