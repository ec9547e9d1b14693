"""The token format: ``<prefix>_<key_id:12><secret:32><checksum:6>``.

Everything here is pure: no I/O, no clock. A token with a wrong prefix,
length, alphabet or checksum is rejected before anything else looks at it.
"""

from __future__ import annotations

import re
import secrets
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from pat_middleware.errors import InvalidToken

__all__ = [
    "BASE62",
    "DEFAULT_PREFIX",
    "TOKEN_PATTERN",
    "ParsedToken",
    "checksum",
    "find_tokens",
    "generate",
    "generate_key_id",
    "is_key_id",
    "parse",
    "validate_prefix",
]

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
DEFAULT_PREFIX = "pat"
KEY_ID_LENGTH = 12
SECRET_LENGTH = 32
CHECKSUM_LENGTH = 6
BODY_LENGTH = KEY_ID_LENGTH + SECRET_LENGTH + CHECKSUM_LENGTH

_PREFIX_RE = re.compile(r"[a-z][a-z0-9]{1,9}")

#: Finds candidate tokens of any valid prefix in text (for secret scanners).
#: A match still needs :func:`parse` (checksum) before it is called a token.
TOKEN_PATTERN = re.compile(rf"(?<![A-Za-z0-9_])([a-z][a-z0-9]{{1,9}})_([0-9A-Za-z]{{{BODY_LENGTH}}})(?![A-Za-z0-9_])")


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it matches ``[a-z][a-z0-9]{1,9}``, else raise ValueError."""
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"token prefix must match [a-z][a-z0-9]{{1,9}}, got {prefix!r}")
    return prefix


_KEY_ID_RE = re.compile(rf"[0-9A-Za-z]{{{KEY_ID_LENGTH}}}")


def is_key_id(value: object) -> bool:
    """True if ``value`` has the shape of a key id (12 base62 characters): what a
    token id must look like before any store is asked about it."""
    return isinstance(value, str) and _KEY_ID_RE.fullmatch(value) is not None


_BODY_RE = re.compile(rf"[0-9A-Za-z]{{{BODY_LENGTH}}}")
#: Every two-digit base62 string, by value: a checksum is three of them.
_PAIRS = [a + b for a in BASE62 for b in BASE62]
_PAIR = 62 * 62


def checksum(head: str) -> str:
    """CRC-32 of ``head`` (everything before the checksum), base62, 6 digits.

    Most significant digit first, left-padded with ``0`` (CRC-32 < 62**6).
    """
    high, rest = divmod(zlib.crc32(head.encode("ascii")), _PAIR * _PAIR)
    middle, low = divmod(rest, _PAIR)
    return _PAIRS[high] + _PAIRS[middle] + _PAIRS[low]


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(length))


def generate_key_id() -> str:
    """A fresh random key id (12 base62 characters, about 71 bits)."""
    return _random_base62(KEY_ID_LENGTH)


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A token split into its parts. The secret never shows in ``repr``."""

    prefix: str
    key_id: str
    secret: str = field(repr=False)


def generate(prefix: str = DEFAULT_PREFIX, key_id: str | None = None) -> tuple[str, ParsedToken]:
    """Mint a token. Returns ``(plaintext, parts)``; the plaintext is shown once."""
    validate_prefix(prefix)
    key_id = key_id or generate_key_id()
    secret = _random_base62(SECRET_LENGTH)
    head = f"{prefix}_{key_id}{secret}"
    return head + checksum(head), ParsedToken(prefix, key_id, secret)


def parse(token: str, prefix: str = DEFAULT_PREFIX) -> ParsedToken:
    """Split and check a token; raise ``InvalidToken("malformed")`` on any defect.

    Checks, in order and without I/O: type, prefix, length, alphabet, checksum.
    """
    if (
        not isinstance(token, str)
        or len(token) != len(prefix) + 1 + BODY_LENGTH
        or not token.startswith(prefix)
        or token[len(prefix)] != "_"
    ):
        raise InvalidToken("malformed")
    body = token[len(prefix) + 1 :]
    if not _BODY_RE.fullmatch(body):
        raise InvalidToken("malformed")
    split = len(token) - CHECKSUM_LENGTH
    if checksum(token[:split]) != token[split:]:
        raise InvalidToken("malformed")
    return ParsedToken(prefix, body[:KEY_ID_LENGTH], body[KEY_ID_LENGTH : KEY_ID_LENGTH + SECRET_LENGTH])


def find_tokens(text: str, prefix: str | None = None) -> Iterator[tuple[int, str]]:
    """Yield ``(offset, token)`` for every well-formed token in ``text``.

    Candidates come from :data:`TOKEN_PATTERN`; only those whose checksum is
    right are yielded. With ``prefix``, only tokens of that prefix.
    """
    for match in TOKEN_PATTERN.finditer(text):
        found_prefix = match.group(1)
        if prefix is not None and found_prefix != prefix:
            continue
        try:
            parse(match.group(0), found_prefix)
        except InvalidToken:
            continue
        yield match.start(), match.group(0)
