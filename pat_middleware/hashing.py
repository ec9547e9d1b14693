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
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

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

    ``release_memory`` (on by default): after each run, hand the freed working
    memory back to the OS (glibc's ``malloc_trim``, about 1 ms against the
    run's 20 ms; a no-op elsewhere). Without it glibc keeps each freed 19 MiB
    block in whichever malloc arena served it, and a threaded server's
    resident memory creeps up by that much per arena.
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
        self._release = _malloc_trim() if release_memory else _nothing

    def hash(self, secret: str) -> str:
        try:
            return self._hasher.hash(secret)
        finally:
            self._release()

    def verify(self, stored: str, secret: str) -> bool:
        try:
            return self._hasher.verify(stored, secret)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
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
