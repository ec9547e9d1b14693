"""Token format: generation, parsing, checksum, scanning."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pat_middleware.core.tokens import (
    TOKEN_PATTERN,
    ParsedToken,
    checksum,
    find_tokens,
    generate,
    parse,
    validate_prefix,
)
from pat_middleware.errors import InvalidToken

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def independent_checksum(head: str) -> str:
    """CRC-32 + base62 written from the spec, not from the library."""
    n = zlib.crc32(head.encode())
    out = ""
    for _ in range(6):
        out = ALPHABET[n % 62] + out
        n //= 62
    assert n == 0  # 2**32 < 62**6
    return out


def test_generated_token_has_the_documented_shape() -> None:
    token, parts = generate()
    assert token.startswith("pat_")
    body = token[4:]
    assert len(body) == 12 + 32 + 6
    assert set(body) <= set(ALPHABET)
    assert body[:12] == parts.key_id
    assert body[12:44] == parts.secret
    assert body[44:] == independent_checksum(token[:-6])
    assert TOKEN_PATTERN.fullmatch(token)


def test_round_trip_and_custom_prefix() -> None:
    for prefix in ("pat", "ghp", "acme2", "a1"):
        token, parts = generate(prefix)
        assert parse(token, prefix) == parts
        assert parts.prefix == prefix


def test_tokens_are_unique() -> None:
    assert len({generate()[0] for _ in range(2000)}) == 2000


def test_secret_is_not_in_repr() -> None:
    _, parts = generate()
    assert parts.secret not in repr(parts)


@pytest.mark.parametrize("head", ["pat_", "pat_000000000000", "x" * 100, "pat_" + "z" * 44])
def test_checksum_matches_independent_crc32_base62(head: str) -> None:
    assert checksum(head) == independent_checksum(head)


def test_checksum_is_left_padded() -> None:
    # find a head whose CRC is small enough to need padding
    head = next(h for h in (f"pat_{i:044d}" for i in range(200000)) if zlib.crc32(h.encode()) < 62**5)
    assert checksum(head).startswith("0")
    assert len(checksum(head)) == 6


def _mutations(token: str) -> list[str]:
    body_start = 4
    flipped = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    return [
        "",
        token[:-1],
        token + "0",
        "PAT" + token[3:],
        "ghp" + token[3:],
        token.replace("_", "-", 1),
        token[: body_start + 5] + "!" + token[body_start + 6 :],
        token[: body_start + 5] + "é" + token[body_start + 6 :],
        flipped,  # checksum no longer matches
        token[:-6] + ("000000" if token[-6:] != "000000" else "000001"),
        " " + token,
    ]


def test_parse_rejects_every_defect_as_malformed() -> None:
    token, _ = generate()
    for bad in _mutations(token):
        with pytest.raises(InvalidToken) as info:
            parse(bad)
        assert info.value.reason == "malformed"
        assert token not in str(info.value) and token not in repr(info.value)


@pytest.mark.parametrize("value", [None, 42, b"pat_x", ["pat"]])
def test_parse_rejects_non_strings(value: object) -> None:
    with pytest.raises(InvalidToken):
        parse(value)  # type: ignore[arg-type]


@given(st.text(max_size=80))
def test_parse_never_raises_anything_else(text: str) -> None:
    try:
        parse(text)
    except InvalidToken as exc:
        assert exc.reason == "malformed"


@pytest.mark.parametrize("prefix", ["", "p", "Pat", "1pat", "pat_", "abcdefghijk", "pa-t"])
def test_invalid_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError):
        validate_prefix(prefix)
    with pytest.raises(ValueError):
        generate(prefix)


def test_find_tokens_in_text() -> None:
    good, _ = generate()
    other, _ = generate("ghx")
    bad = good[:-1] + ("0" if good[-1] != "0" else "1")
    text = f"export TOKEN={good}\nold={bad} url=https://x/?t={other}&y=1\nembedded_{good}"
    found = [tok for _, tok in find_tokens(text)]
    assert found == [good, other]
    assert [tok for _, tok in find_tokens(text, prefix="ghx")] == [other]
    offset, tok = next(find_tokens(text))
    assert text[offset : offset + len(tok)] == tok


def test_parsed_token_is_frozen() -> None:
    _, parts = generate()
    with pytest.raises(AttributeError):
        parts.secret = "x"  # type: ignore[misc]
    assert isinstance(parts, ParsedToken)
