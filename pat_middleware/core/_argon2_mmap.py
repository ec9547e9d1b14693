"""argon2 runs whose working memory is a private anonymous mmap, unmapped when the run ends.

argon2-cffi's ``hash_secret``/``verify_secret`` let the C library ``malloc``
its working memory (``memory_cost`` KiB per run). glibc raises its dynamic
mmap threshold to the size of the first large block freed, so from then on
argon2's blocks come from malloc arenas, where a freed block can stay resident
in one arena while the next run allocates in another: a threaded server's peak
RSS then holds more blocks than runs in flight.

Here a run goes through ``argon2_ctx`` (argon2-cffi's ``low_level.core``)
with ``allocate_cbk``/``free_cbk`` callbacks that map a fresh private
anonymous region (:mod:`mmap`, ``MAP_POPULATE`` where the OS has it) and
unmap it as soon as the run is over (argon2 has already wiped it): the
memory argon2 holds is exactly ``memory_cost`` KiB per run in flight,
whatever the allocator. The price is the page faults of the fresh region
(a few ms per 19 MiB run; argon2-cffi plus ``malloc_trim`` pays them too).

PHC strings are written and read here exactly as argon2's ``encoding.c``
does (standard base64 without padding, canonical only; ``$v=`` optional on
reading, meaning version 0x10). :func:`available` says whether all of this
works in this process (``ffi.callback`` may be refused on hardened systems;
the bindings' context structure may change): callers fall back to
argon2-cffi's normal path when it does not.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import mmap
import re
import threading
from typing import Any, NamedTuple

from argon2.exceptions import HashingError
from argon2.low_level import ARGON2_VERSION, Type, core, error_to_str, ffi, hash_secret_raw

__all__ = ["Params", "available", "encode", "hash_raw", "parse", "verify"]

_OK = 0
_NAMES = {Type.ID: "argon2id", Type.I: "argon2i", Type.D: "argon2d"}
_TYPES = {name: type_ for type_, name in _NAMES.items()}
_U32 = 0xFFFFFFFF
# argon2's decode_string: "$<type>[$v=<n>]$m=<n>,t=<n>,p=<n>$<salt>$<hash>", nothing after.
_PHC = re.compile(
    r"\$(argon2id|argon2i|argon2d)(?:\$v=([0-9]+))?\$m=([0-9]+),t=([0-9]+),p=([0-9]+)"
    r"\$([A-Za-z0-9+/]*)\$([A-Za-z0-9+/]*)"
)


class Params(NamedTuple):
    """What a PHC string says: how to run argon2 again, and the hash to compare with."""

    type: Type
    version: int
    memory_cost: int
    time_cost: int
    parallelism: int
    salt: bytes
    hash: bytes


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes | None:
    """Canonical unpadded base64 only (argon2 refuses a length of 1 mod 4 and non-zero spare bits)."""
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if _b64encode(data) == text else None


def encode(params: Params) -> str:
    """The PHC string argon2's ``encode_string`` writes (always with ``$v=``)."""
    return (
        f"${_NAMES[params.type]}$v={params.version}$m={params.memory_cost},t={params.time_cost},"
        f"p={params.parallelism}${_b64encode(params.salt)}${_b64encode(params.hash)}"
    )


def parse(stored: str) -> Params | None:
    """``stored``'s parameters, salt and hash, or None when argon2 would not decode it."""
    match = _PHC.fullmatch(stored)
    if match is None:
        return None
    name, version, m, t, p, salt_text, hash_text = match.groups()
    try:  # int() refuses more than 4,300 digits: far beyond uint32_t anyway
        v, m_cost, t_cost, lanes = int(version) if version is not None else 0x10, int(m), int(t), int(p)
    except ValueError:
        return None
    salt, digest = _b64decode(salt_text), _b64decode(hash_text)
    if salt is None or digest is None or max(v, m_cost, t_cost, lanes) > _U32:
        return None
    return Params(_TYPES[name], v, m_cost, t_cost, lanes, salt, digest)


# -- the allocator --------------------------------------------------------------------------------

#: Regions argon2 holds now, by address: the mapping and the cffi view that exports its buffer.
_live: dict[int, tuple[mmap.mmap, Any]] = {}
_live_lock = threading.Lock()
_FLAGS = (mmap.MAP_PRIVATE | getattr(mmap, "MAP_POPULATE", 0)) if hasattr(mmap, "MAP_PRIVATE") else 0


def _allocate(memory: Any, size: int) -> int:
    memory[0] = ffi.NULL  # argon2 reads a NULL pointer as the allocation error
    try:
        region = mmap.mmap(-1, size, flags=_FLAGS)
        view = ffi.from_buffer("uint8_t[]", region, require_writable=True)
    except Exception:  # nothing may escape into C; argon2 reports the failure
        return -1
    with _live_lock:
        _live[int(ffi.cast("uintptr_t", view))] = (region, view)
    memory[0] = view
    return 0


def _free(memory: Any, size: int) -> None:
    with _live_lock:
        entry = _live.pop(int(ffi.cast("uintptr_t", memory)), None)
    if entry is not None:
        region, view = entry
        ffi.release(view)
        region.close()  # munmap


def _callbacks() -> tuple[Any, Any]:
    """cffi callbacks for ``allocate_cbk``/``free_cbk`` (raises where ffi.callback is refused)."""
    fields = {name for name, _ in ffi.typeof("argon2_context").fields}
    needed = {"out", "outlen", "pwd", "pwdlen", "salt", "saltlen", "secret", "secretlen", "ad", "adlen"}
    needed |= {"t_cost", "m_cost", "lanes", "threads", "version", "allocate_cbk", "free_cbk", "flags"}
    if not needed <= fields or not _FLAGS:
        raise LookupError("argon2_context has changed, or no anonymous private mmap here")
    allocate = ffi.callback("int(uint8_t **, size_t)", _allocate, error=-1)
    free = ffi.callback("void(uint8_t *, size_t)", _free)
    return allocate, free


try:
    _ALLOCATE, _FREE = _callbacks()
except Exception:  # MemoryError (no W+X memory for ffi.callback), LookupError...
    _ALLOCATE = _FREE = None


def hash_raw(
    secret: bytes,
    salt: bytes,
    time_cost: int,
    memory_cost: int,
    parallelism: int,
    hash_len: int,
    type: Type,
    version: int = ARGON2_VERSION,
) -> bytes:
    """argon2-cffi's ``hash_secret_raw``, with the working memory mmapped. Raises HashingError."""
    if _ALLOCATE is None:
        raise HashingError("mmapped argon2 runs are unavailable here")
    ctx = ffi.new("argon2_context *")
    out = ffi.new("uint8_t[]", hash_len)
    pwd = ffi.new("uint8_t[]", secret)
    salt_buf = ffi.new("uint8_t[]", salt)
    try:
        ctx.out, ctx.outlen = out, hash_len
        ctx.pwd, ctx.pwdlen = pwd, len(secret)
        ctx.salt, ctx.saltlen = salt_buf, len(salt)
        ctx.secret, ctx.secretlen, ctx.ad, ctx.adlen = ffi.NULL, 0, ffi.NULL, 0
        ctx.t_cost, ctx.m_cost, ctx.lanes, ctx.threads = time_cost, memory_cost, parallelism, parallelism
        ctx.version, ctx.flags = version, 0
        ctx.allocate_cbk, ctx.free_cbk = _ALLOCATE, _FREE
    except (OverflowError, TypeError) as exc:  # a field out of uint32_t's range
        raise HashingError(str(exc)) from None
    rc = core(ctx, type.value)
    if rc != _OK:
        raise HashingError(error_to_str(rc))
    return bytes(ffi.buffer(out, hash_len))


def verify(params: Params, secret: bytes) -> bool:
    """True when ``secret`` hashes to ``params.hash`` (constant-time comparison). Raises HashingError."""
    digest = hash_raw(
        secret, params.salt, params.time_cost, params.memory_cost, params.parallelism, len(params.hash),
        params.type, params.version,
    )  # fmt: skip
    return hmac.compare_digest(digest, params.hash)


@functools.cache
def available() -> bool:
    """True when mmapped runs work here and give argon2-cffi's results (checked once, on small runs)."""
    if _ALLOCATE is None:
        return False
    salt = bytes(range(16))
    try:
        for type_, version in ((Type.ID, ARGON2_VERSION), (Type.I, 0x10), (Type.D, ARGON2_VERSION)):
            mine = hash_raw(b"self-test", salt, 1, 16, 2, 16, type_, version)
            if mine != hash_secret_raw(b"self-test", salt, 1, 16, 2, 16, type_, version):
                return False
    except Exception:  # whatever went wrong, use argon2-cffi's own path
        return False
    return not _live
