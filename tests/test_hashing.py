"""Argon2id and HMAC verifiers."""

from __future__ import annotations

import mmap
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import argon2
import pytest
from argon2.exceptions import HashingError
from argon2.low_level import Type, hash_secret

from pat_middleware.core import _argon2_mmap
from pat_middleware.core.hashing import Argon2Hasher, Hasher, HMACHasher, _malloc_trim

#: How an Argon2Hasher may run argon2: its working memory mmapped per run (the
#: default where available), argon2-cffi's path plus malloc_trim (the fallback),
#: argon2-cffi's path alone (release_memory=False).
MODES = ["mmap", "trim", "plain"]


@pytest.fixture(params=MODES)
def make(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Argon2Hasher]:
    """Builds Argon2Hashers that run argon2 the parametrized way."""
    mode = request.param
    if mode == "mmap" and not _argon2_mmap.available():
        pytest.skip("mmapped argon2 runs are unavailable here")
    if mode == "trim":
        monkeypatch.setattr(_argon2_mmap, "available", lambda: False)

    def build(**params: Any) -> Argon2Hasher:
        hasher = Argon2Hasher(**params, release_memory=mode != "plain")
        assert hasher._mmap is (mode == "mmap")
        return hasher

    return build


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


# -- argon2: compatibility with argon2-cffi, old strings, corrupt strings, threads ----------------


def test_argon2_strings_verify_both_ways_with_argon2_cffi(make: Callable[..., Argon2Hasher]) -> None:
    ours, theirs = make(), argon2.PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
    stored = ours.hash("s3cret")
    assert argon2.extract_parameters(stored) == theirs._parameters
    assert theirs.verify(stored, "s3cret")
    with pytest.raises(argon2.exceptions.VerifyMismatchError):
        theirs.verify(stored, "s3creT")
    for other in (theirs.hash("s3cret"), argon2.PasswordHasher().hash("s3cret")):  # argon2-cffi's own defaults too
        assert ours.verify(other, "s3cret")
        assert not ours.verify(other, "s3cret ")
    assert not ours.needs_rehash(theirs.hash("x"))
    assert ours.needs_rehash(argon2.PasswordHasher().hash("x"))
    assert ours.hash("s3cret") != stored  # a fresh salt each time
    assert ours.verify(ours.hash("ünïcødé 🔑"), "ünïcødé 🔑")
    assert not ours.verify(stored, "\udc80")  # a secret that UTF-8 cannot encode matches nothing


def test_argon2_non_default_parameters_verify(make: Callable[..., Argon2Hasher]) -> None:
    ours = make(time_cost=3, memory_cost=64, parallelism=2)
    stored = ours.hash("pw")
    assert stored.startswith("$argon2id$v=19$m=64,t=3,p=2$")
    assert argon2.PasswordHasher(time_cost=3, memory_cost=64, parallelism=2).verify(stored, "pw")
    assert make().verify(stored, "pw")  # the stored string's parameters, not the hasher's
    assert make().needs_rehash(stored)


@pytest.mark.parametrize(
    ("type_", "version", "salt_len", "hash_len", "t", "m", "p"),
    [
        (Type.I, 0x13, 16, 32, 3, 4096, 1),
        (Type.D, 0x13, 16, 32, 1, 256, 4),
        (Type.ID, 0x13, 8, 4, 1, 8, 1),  # argon2's minimum salt, hash and memory
        (Type.ID, 0x13, 24, 64, 2, 1024, 3),
        (Type.I, 0x10, 16, 32, 2, 1024, 1),  # argon2 1.0 ("$v=16")
        (Type.D, 0x10, 16, 16, 1, 64, 2),
    ],
)
def test_argon2_old_strings_of_every_type_and_version_verify(
    make: Callable[..., Argon2Hasher], type_: Type, version: int, salt_len: int, hash_len: int, t: int, m: int, p: int
) -> None:
    salt = bytes(range(salt_len))
    stored = hash_secret(b"old", salt, t, m, p, hash_len, type_, version).decode()
    hasher = make()
    assert hasher.verify(stored, "old")
    assert not hasher.verify(stored, "new")
    assert hasher.needs_rehash(stored)
    if version == 0x10:  # argon2 1.2 strings carry no "$v=" at all: version 1.0
        legacy = stored.replace("$v=16", "")
        assert argon2.PasswordHasher().verify(legacy, "old")
        assert hasher.verify(legacy, "old")


def _corrupt() -> list[str]:
    good = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
    head, salt, digest = good.rsplit("$", 2)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return [
        "",
        "$",
        "not a hash",
        "$argon2id$",
        good[:-1],  # 42 base64 characters for 32 bytes: spare bits not zero
        good[:-2],  # a truncated hash
        good + "=",  # padding
        good + "\n",
        good + "$",
        good.replace("$argon2id$", "$argon2x$"),
        good.replace("$argon2id$", "$argon2ID$"),
        good.replace("$argon2id$", "$argon2id$$"),
        good.replace("m=8,", "m=7,"),  # below argon2's minimum
        good.replace("m=8,", "m=4294967296,"),  # beyond uint32_t
        good.replace("m=8,", "m=" + "9" * 5000 + ","),
        good.replace("t=1,", "t=0,"),
        good.replace(",p=1", ",p=0"),
        good.replace(",p=1", ""),
        good.replace("m=8,t=1", "t=1,m=8"),
        good.replace("m=8,", "m=+8,"),
        good.replace("m=8,", "m=٨,"),  # a non-ASCII digit
        good.replace("$v=19", "$v=x"),
        f"{head}$$" + digest,  # no salt
        f"{head}${salt[:8]}${digest}",  # a salt under 8 bytes
        f"{head}${salt}$" + digest[:4],  # a hash under 4 bytes
        f"{head}${salt}$" + digest[:-1] + alphabet[alphabet.index(digest[-1]) + 1],  # spare bits set
        f"{head}${salt.replace(salt[3], '-')}${digest}",
        f"{head}${salt}${digest}".replace("$", "\0", 1),
        good.replace("$argon2id$", "$argon2id\0$"),
        good + "é",  # not ASCII
        "$hmac-sha256$k1$abc",
    ]


def test_argon2_corrupt_strings_are_refused_never_raise(make: Callable[..., Argon2Hasher]) -> None:
    hasher = make()
    for stored in _corrupt():
        with pytest.raises((argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError, ValueError)):
            argon2.PasswordHasher().verify(stored, "pw")  # argon2-cffi refuses it too
        assert not hasher.verify(stored, "pw"), stored
        assert hasher.needs_rehash(stored) in (True, False)


def test_argon2_threads_verify_concurrently(make: Callable[..., Argon2Hasher]) -> None:
    hasher = make(time_cost=1, memory_cost=1024, parallelism=1)
    secrets = [f"secret-{i}" for i in range(16)]
    stored = [hasher.hash(secret) for secret in secrets]
    results: list[list[bool]] = [[] for _ in secrets]
    start = threading.Barrier(len(secrets))

    def run(i: int) -> None:
        start.wait()
        for _ in range(3):
            results[i].append(hasher.verify(stored[i], secrets[i]))
            results[i].append(hasher.verify(stored[i], secrets[(i + 1) % 16]))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(secrets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [[True, False] * 3 for _ in secrets]
    assert not _argon2_mmap._live


class _Region(mmap.mmap):
    """An mmap that notes its size and its unmapping."""

    log: list[str]

    def close(self) -> None:
        self.log.append(f"unmap {len(self)}")
        super().close()


def _recording(log: list[str]) -> Any:
    def region(fileno: int, length: int, **kwargs: Any) -> _Region:
        log.append(f"map {length}")
        made = _Region(fileno, length, **kwargs)
        made.log = log
        return made

    return SimpleNamespace(mmap=region)


def test_argon2_memory_is_mapped_and_unmapped_on_every_run(monkeypatch: pytest.MonkeyPatch) -> None:
    if not _argon2_mmap.available():
        pytest.skip("mmapped argon2 runs are unavailable here")
    log: list[str] = []
    monkeypatch.setattr(_argon2_mmap, "mmap", _recording(log))
    hasher = Argon2Hasher()
    stored = hasher.hash("pw")
    assert hasher.verify(stored, "pw")
    assert not hasher.verify(stored, "wrong")
    block = 19 * 1024 * 1024
    assert log == [f"map {block}", f"unmap {block}"] * 3
    assert not _argon2_mmap._live


def test_argon2_allocation_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run whose memory cannot be mapped: hash raises as argon2-cffi does, verify says False."""
    if not _argon2_mmap.available():
        pytest.skip("mmapped argon2 runs are unavailable here")
    hasher = Argon2Hasher(time_cost=1, memory_cost=8)
    stored = hasher.hash("pw")

    def refuse(*args: Any, **kwargs: Any) -> mmap.mmap:
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(_argon2_mmap, "mmap", SimpleNamespace(mmap=refuse))
    with pytest.raises(HashingError, match="allocation"):
        hasher.hash("pw")
    assert not hasher.verify(stored, "pw")
    assert not _argon2_mmap._live


def test_argon2_falls_back_when_callbacks_are_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ffi.callback (hardened system) or a changed argon2_context: argon2-cffi's path, plus malloc_trim."""
    monkeypatch.setattr(_argon2_mmap, "_ALLOCATE", None)
    assert not _argon2_mmap.available.__wrapped__()
    with pytest.raises(HashingError):
        _argon2_mmap.hash_raw(b"pw", bytes(16), 1, 8, 1, 32, Type.ID)
    monkeypatch.setattr(_argon2_mmap, "available", _argon2_mmap.available.__wrapped__)
    hasher = Argon2Hasher(time_cost=1, memory_cost=8)
    assert not hasher._mmap
    assert hasher._release is _malloc_trim()
    assert hasher.verify(hasher.hash("pw"), "pw")
