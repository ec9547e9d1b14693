"""Authorization header parsing (RFC 6750 §2.1, RFC 9110 §11)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pat_middleware.bearer import bearer_token, request_token
from pat_middleware.errors import (
    AuthenticationRequired,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    PATError,
    StoreUnavailable,
    error_response,
)

TOKEN = "pat_abc123DEF456ghi789"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_scheme_is_case_insensitive(scheme: str) -> None:
    assert bearer_token([f"{scheme} {TOKEN}"]) == TOKEN


def test_extra_spaces_are_tolerated() -> None:
    assert bearer_token([f"Bearer    {TOKEN}  "]) == TOKEN


def test_no_header_or_other_scheme_means_no_credentials() -> None:
    assert bearer_token([]) is None
    assert bearer_token(["Basic dXNlcjpwYXNz"]) is None
    assert bearer_token(["Token abc"]) is None
    assert bearer_token(["Bearerx abc"]) is None


@pytest.mark.parametrize(
    "value",
    [
        "Bearer",
        "Bearer ",
        "Bearer  ",
        f"Bearer {TOKEN} extra",
        "Bearer a,b",
        'Bearer "quoted"',
        "Bearer =abc",
        "Bearer tok\x00en",
        "Bearer tökén",
        f"Bearer\t{TOKEN}",
        f"bearer\x0b{TOKEN}",
    ],
)
def test_malformed_bearer_credentials_are_invalid_request(value: str) -> None:
    with pytest.raises(InvalidRequest):
        bearer_token([value])


def test_two_headers_are_invalid_request_even_if_equal() -> None:
    with pytest.raises(InvalidRequest):
        bearer_token([f"Bearer {TOKEN}", f"Bearer {TOKEN}"])


@pytest.mark.parametrize(
    "value",
    [
        f"Basic dXNlcjpwYXNz,Bearer {TOKEN}",
        f"Token abc, bearer {TOKEN}",
        "Basic x,\tBearer",
        f"Bearer {TOKEN}, Bearer {TOKEN}",
        "Bearer,Basic eDp5",  # an empty Bearer header first
        "bearer , Basic eDp5",
    ],
)
def test_a_bearer_credential_after_a_comma_is_two_headers(value: str) -> None:
    # How a WSGI server passes two Authorization headers; never "another scheme".
    with pytest.raises(InvalidRequest, match="exactly one Authorization header"):
        bearer_token([value])


def test_commas_inside_another_scheme_are_not_two_headers() -> None:
    assert bearer_token(['Digest username="bearer", realm="a, b", bearer=1']) is None
    assert bearer_token(['Digest username="a, bearer b", realm="r"']) is None  # inside a quoted-string
    assert bearer_token(['Digest a="x\\", bearer y", b=1']) is None  # an escaped quote stays inside


def test_percent_encoded_query_keys_count_as_access_token() -> None:
    from pat_middleware.edge import query_tokens

    assert query_tokens(f"access%5Ftoken={TOKEN}") == [TOKEN]
    assert query_tokens("a=1&b=%20") == []
    with pytest.raises(InvalidRequest):
        request_token([f"Bearer {TOKEN}"], query_tokens(f"access%5ftoken={TOKEN}"), allow_query=True)


def test_query_tokens_are_ignored_unless_allowed() -> None:
    assert request_token([], [TOKEN]) is None
    assert request_token([f"Bearer {TOKEN}"], ["other"]) == TOKEN
    assert request_token([], [TOKEN], allow_query=True) == TOKEN


def test_token_in_two_places_is_invalid_request() -> None:
    with pytest.raises(InvalidRequest):
        request_token([f"Bearer {TOKEN}"], [TOKEN], allow_query=True)
    with pytest.raises(InvalidRequest):
        request_token([], [TOKEN, TOKEN], allow_query=True)
    with pytest.raises(InvalidRequest):
        request_token([], ["bad token"], allow_query=True)


@given(st.lists(st.text(), max_size=3), st.lists(st.text(), max_size=3), st.booleans())
def test_arbitrary_input_raises_only_invalid_request(headers: list[str], query: list[str], allow: bool) -> None:
    try:
        token = request_token(headers, query, allow)
    except InvalidRequest:
        return
    assert token is None or (token and " " not in token)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decoded_as_latin1(raw: bytes) -> None:
    try:
        token = bearer_token([raw.decode("latin-1")])
    except InvalidRequest:
        return
    assert token is None or token.isascii()


def test_challenges_follow_rfc_6750() -> None:
    assert AuthenticationRequired().challenge("api") == 'Bearer realm="api"'
    assert InvalidRequest("Send one").challenge("api") == (
        'Bearer realm="api", error="invalid_request", error_description="Send one"'
    )
    challenge = InvalidToken("bad_secret", "abc").challenge('my "api"')
    assert challenge.startswith('Bearer realm="my \\"api\\"", error="invalid_token", error_description=')
    assert "bad_secret" not in challenge and "abc" not in challenge  # reason and id are for logs only
    insufficient = InsufficientScope(["repo:read", "user"]).challenge("api")
    assert insufficient.endswith('scope="repo:read user"')
    assert 'error="insufficient_scope"' in insufficient


def test_error_response_shapes() -> None:
    status, headers, body = error_response(InvalidToken("expired"), "api")
    assert status == 401
    assert ("Content-Type", "application/json") in headers
    assert body == b'{"error": "invalid_token", "error_description": "The access token is invalid, expired or revoked"}'
    status, headers, _ = error_response(StoreUnavailable(retry_after=7), "api")
    assert status == 503
    assert ("Retry-After", "7") in headers
    assert not any(h == "WWW-Authenticate" for h, _ in headers)
    status, _, _ = error_response(InsufficientScope(["a"]), "api")
    assert status == 403


def test_every_error_is_a_pat_error() -> None:
    for exc in (
        AuthenticationRequired(),
        InvalidRequest("x"),
        InvalidToken("unknown"),
        InsufficientScope(["a"]),
        StoreUnavailable(),
    ):
        assert isinstance(exc, PATError)
    with pytest.raises(ValueError):
        InvalidToken("not-a-reason")
