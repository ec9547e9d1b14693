"""Argon2id and HMAC verifiers."""

from __future__ import annotations

import pytest

from pat_middleware.hashing import Argon2Hasher, Hasher, HMACHasher


def test_argon2id_defaults_are_the_owasp_minimum() -> None:
    stored = Argon2Hasher().hash("s3cret")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert "s3cret" not in stored


def test_argon2_verify_and_mismatch() -> None:
    hasher = Argon2Hasher(time_cost=1, memory_cost=8, parallelism=1)
    stored = hasher.hash("right")
    assert hasher.verify(stored, "right")
    assert not hasher.verify(stored, "wrong")
    assert not hasher.verify("not a hash", "right")
    assert not hasher.verify("$hmac-sha256$k1$abc", "right")


def test_argon2_needs_rehash_when_parameters_rise() -> None:
    weak = Argon2Hasher(time_cost=1, memory_cost=8).hash("x")
    assert Argon2Hasher().needs_rehash(weak)
    assert not Argon2Hasher(time_cost=1, memory_cost=8).needs_rehash(weak)
    assert not Argon2Hasher().needs_rehash("garbage")


def test_hmac_round_trip_and_format() -> None:
    hasher = HMACHasher(b"server key", key_id="k7")
    stored = hasher.hash("secret")
    assert stored.startswith("$hmac-sha256$k7$")
    assert hasher.verify(stored, "secret")
    assert not hasher.verify(stored, "Secret")
    assert not HMACHasher(b"other key", key_id="k7").verify(stored, "secret")
    assert not hasher.verify("$argon2id$v=19$...", "secret")
    assert not hasher.verify("$hmac-sha256$nokey$abc", "secret")


def test_hmac_key_rotation() -> None:
    old = HMACHasher("old", key_id="k1")
    stored = old.hash("secret")
    new = HMACHasher("new", key_id="k2", old_keys={"k1": "old"})
    assert new.verify(stored, "secret")
    assert new.needs_rehash(stored)
    assert not new.needs_rehash(new.hash("secret"))


def test_hmac_refuses_bad_configuration() -> None:
    with pytest.raises(ValueError):
        HMACHasher(b"")
    with pytest.raises(ValueError):
        HMACHasher(b"k", key_id="a$b")


def test_both_satisfy_the_protocol_and_hide_keys() -> None:
    assert isinstance(Argon2Hasher(), Hasher)
    assert isinstance(HMACHasher(b"topsecretkey"), Hasher)
    assert "topsecretkey" not in repr(HMACHasher(b"topsecretkey"))
