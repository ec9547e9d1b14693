"""The framework-neutral edge rules (``pat_middleware.core.edge``) the ASGI and WSGI edges share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from pat_middleware.core.edge import ExemptPaths, RequestRules, expiry_value, query_tokens
from pat_middleware.errors import AuthenticationRequired, InvalidRequest


@pytest.mark.parametrize(
    ("prefixes", "path", "exempt"),
    [
        (["/health"], "/health", True),
        (["/health"], "/health/", True),
        (["/health"], "/health/db", True),
        (["/health"], "/healthz", False),
        (["/health"], "/Health", False),
        (["/health"], "/", False),
        (["/static/"], "/static", True),
        (["/static/"], "/static/a.css", True),
        (["/"], "/anything/at/all", True),
        ("/docs", "/docs/oauth2-redirect", True),
        ([], "/health", False),
    ],
)
def test_exempt_prefixes_match_on_segment_boundaries(prefixes: list[str] | str, path: str, exempt: bool) -> None:
    assert (path in ExemptPaths(prefixes)) is exempt


@pytest.mark.parametrize("bad", ["health", "", 3, None])
def test_exempt_prefixes_must_be_absolute_paths(bad: object) -> None:
    with pytest.raises(ValueError, match="starting with '/'"):
        ExemptPaths([bad])  # type: ignore[list-item]


def test_query_tokens_are_percent_decoded_and_all_collected() -> None:
    assert query_tokens("") == []
    assert query_tokens("a=1&b=2") == []
    assert query_tokens("access_token=abc%2Bd&x=1&access_token=") == ["abc+d", ""]


def test_expiry_value_is_githubs_format_in_utc() -> None:
    assert expiry_value(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)) == "2026-12-31 23:59:59 UTC"
    plus_two = timezone(timedelta(hours=2))
    assert expiry_value(datetime(2027, 1, 1, 1, 0, tzinfo=plus_two)) == "2026-12-31 23:00:00 UTC"


def test_request_rules() -> None:
    rules = RequestRules(required=True, exempt=["/health"], allow_query_token=False)
    assert rules.token(["Bearer abc"]) == "abc"
    assert rules.token([], "access_token=abc") is None  # query tokens off
    rules.check_anonymous("/health/live")
    with pytest.raises(AuthenticationRequired):
        rules.check_anonymous("/repos")
    RequestRules(required=False).check_anonymous("/repos")

    with_query = RequestRules(allow_query_token=True)
    assert with_query.token([], "access_token=abc") == "abc"
    with pytest.raises(InvalidRequest):
        with_query.token(["Bearer abc"], "access_token=abc")
