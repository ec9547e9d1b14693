"""Verifiers of token secrets: the ``Hasher`` protocol, argon2id and HMAC-SHA256.

A hasher turns a token's secret part into a self-describing string kept in
the store, and checks a presented secret against it in constant time.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import functools
import hashlib
import hmac
import os
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import argon2
from argon2.exceptions import HashingError, InvalidHashError, VerificationError, VerifyMismatchError
from argon2.low_level import ARGON2_VERSION

from pat_middleware import _argon2_mmap

__all__ = ["Argon2Hasher", "HMACHasher", "Hasher"]


@runtime_checkable
class Hasher(Protocol):
    """Hashes secrets and verifies them. Implementations must be thread-safe."""

    def hash(self, secret: str) -> str:
        """A storable verifier for ``secret``."""
        ...

    def verify(self, stored: str, secret: str) -> bool:
        """True when ``secret`` matches ``stored``, in constant time; never raises on a mismatch."""
        ...

    def needs_rehash(self, stored: str) -> bool:
        """True when ``stored`` was made with weaker parameters than the current ones."""
        ...


class Argon2Hasher:
    """argon2id via argon2-cffi, PHC strings. Defaults: OWASP minimum (m=19 MiB, t=2, p=1).

    Strings are argon2-cffi's (``$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>``,
    16-byte salt, 32-byte hash) and :meth:`verify` takes the type and
    parameters from the stored string, so either side verifies the other's.

    ``release_memory`` (on by default) hands each run's working memory
    (``memory_cost`` KiB) back to the OS when the run ends, so a process's
    resident memory holds one block per argon2 run in flight and no more.
    The run's memory is a private anonymous ``mmap``, unmapped at once
    (argon2's allocation callbacks, see :mod:`pat_middleware._argon2_mmap`);
    its page faults cost a few ms per 19 MiB run. Where that is unavailable
    (``ffi.callback`` refused on a hardened system, a changed argon2-cffi),
    argon2-cffi's own path runs and is followed by glibc's ``malloc_trim``
    (a no-op elsewhere), which narrows but does not bound the peak. With
    ``release_memory=False``, argon2-cffi's path alone: the allocator keeps
    freed blocks (in glibc, one per malloc arena that served a run).
    """

    def __init__(
        self, time_cost: int = 2, memory_cost: int = 19 * 1024, parallelism: int = 1, *, release_memory: bool = True
    ) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            type=argon2.Type.ID,
        )
        self._mmap = release_memory and _argon2_mmap.available()
        self._release = _malloc_trim() if release_memory and not self._mmap else _nothing

    def hash(self, secret: str) -> str:
        if self._mmap:
            h = self._hasher
            salt = os.urandom(h.salt_len)
            digest = _argon2_mmap.hash_raw(
                secret.encode(), salt, h.time_cost, h.memory_cost, h.parallelism, h.hash_len, h.type
            )
            return _argon2_mmap.encode(
                _argon2_mmap.Params(h.type, ARGON2_VERSION, h.memory_cost, h.time_cost, h.parallelism, salt, digest)
            )
        try:
            return self._hasher.hash(secret)
        finally:
            self._release()

    def verify(self, stored: str, secret: str) -> bool:
        if self._mmap:
            params = _argon2_mmap.parse(stored)
            if params is None:
                return False
            try:
                return _argon2_mmap.verify(params, secret.encode())
            except (HashingError, UnicodeEncodeError):
                return False
        try:
            return self._hasher.verify(stored, secret)
        except (VerifyMismatchError, VerificationError, InvalidHashError, UnicodeEncodeError):
            return False
        finally:
            self._release()

    def needs_rehash(self, stored: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return False

    def __repr__(self) -> str:
        h = self._hasher
        return f"Argon2Hasher(time_cost={h.time_cost}, memory_cost={h.memory_cost}, parallelism={h.parallelism})"


def _nothing() -> None:
    pass


@functools.cache
def _malloc_trim() -> Callable[[], None]:
    """glibc's ``malloc_trim(0)`` (returns free heap pages of every arena to the OS), or a no-op."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return _nothing
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int

    def release() -> None:
        trim(0)

    return release


class HMACHasher:
    """HMAC-SHA256 under a server-side key: microseconds instead of argon2's milliseconds.

    Stored form: ``$hmac-sha256$<key_id>$<base64 digest>``. ``old_keys``
    (key id -> key) still verify; their hashes report ``needs_rehash``.
    Keep the key out of the database: whoever has both can test guesses,
    although a 190-bit random secret makes guessing hopeless anyway.
    """

    _SCHEME = "hmac-sha256"

    def __init__(self, key: bytes | str, key_id: str = "k1", old_keys: dict[str, bytes | str] | None = None):
        if not key:
            raise ValueError("HMACHasher needs a non-empty key")
        if "$" in key_id:
            raise ValueError("HMACHasher key_id must not contain '$'")
        self.key_id = key_id
        keys = {kid: k.encode() if isinstance(k, str) else k for kid, k in (old_keys or {}).items()}
        keys[key_id] = key.encode() if isinstance(key, str) else key
        self._keys = keys

    def _digest(self, key: bytes, secret: str) -> str:
        mac = hmac.new(key, secret.encode(), hashlib.sha256).digest()
        return base64.b64encode(mac).decode()

    def hash(self, secret: str) -> str:
        return f"${self._SCHEME}${self.key_id}${self._digest(self._keys[self.key_id], secret)}"

    def _split(self, stored: str) -> tuple[str, str] | None:
        parts = stored.split("$")
        if len(parts) != 4 or parts[0] or parts[1] != self._SCHEME:
            return None
        return parts[2], parts[3]

    def verify(self, stored: str, secret: str) -> bool:
        split = self._split(stored)
        if split is None or split[0] not in self._keys:
            return False
        return hmac.compare_digest(self._digest(self._keys[split[0]], secret), split[1])

    def needs_rehash(self, stored: str) -> bool:
        split = self._split(stored)
        return split is not None and split[0] != self.key_id

    def __repr__(self) -> str:
        return f"HMACHasher(key_id={self.key_id!r})"
