"""Settings are checked when they are given, with one clear line, never inside a request."""

from __future__ import annotations

import math
from typing import Any

import pytest
from flask import Flask
from starlette.applications import Starlette

from pat_middleware import MemoryStore, PATAuth
from pat_middleware.cache.redis import RedisCache
from pat_middleware.flask import PAT
from pat_middleware.starlette import PATMiddleware as ASGIMiddleware
from pat_middleware.wsgi import PATMiddleware as WSGIMiddleware

HEADER_INJECTIONS = ["X\r\nSet-Cookie: injected=1\r\nX-Y", "Bad Header:", "Spaced Name", "Ünicode", ""]


@pytest.mark.parametrize("realm", ["\u20acuro", "a\r\nX-Evil: 1", "", 5])
def test_a_realm_that_cannot_be_a_header_value_is_refused(realm: Any) -> None:
    with pytest.raises(ValueError, match="realm must be printable ASCII"):
        PATAuth(MemoryStore(), realm=realm)


def test_a_realm_with_quotes_is_fine_it_is_escaped() -> None:
    assert PATAuth(MemoryStore(), realm='my "api"').realm == 'my "api"'


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("local_ttl", math.inf),
        ("shared_ttl", 1e300),
        ("subscribed_ttl", -1),
        ("negative_ttl", math.nan),
        ("failure_window", "60"),
        ("failure_limit", 0),
        ("last_used_interval", True),
        ("hash_workers", 0),
        ("local_cache_size", 2.5),
    ],
)
def test_out_of_range_auth_settings_are_refused(option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=option):
        PATAuth(MemoryStore(), **{option: value})


@pytest.mark.parametrize(
    ("option", "value"),
    [("socket_timeout", math.inf), ("socket_timeout", 0), ("tombstone_ttl", 1e300), ("retry_after", -1)],
)
def test_out_of_range_redis_settings_are_refused(option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=option):
        RedisCache("redis://127.0.0.1:1/0", **{option: value})


@pytest.mark.parametrize("name", HEADER_INJECTIONS[:-1])
def test_the_expiry_header_must_be_a_header_name_on_both_edges(name: str) -> None:
    auth = PATAuth(MemoryStore())
    with pytest.raises(ValueError, match="expiry_header must be an HTTP header name"):
        ASGIMiddleware(Starlette(), auth, expiry_header=name)
    with pytest.raises(ValueError, match="expiry_header must be an HTTP header name"):
        WSGIMiddleware(Flask("x").wsgi_app, auth, expiry_header=name)
    # empty or None: no header at all
    assert WSGIMiddleware(Flask("x").wsgi_app, auth, expiry_header="").expiry_header is None
    assert WSGIMiddleware(Flask("x").wsgi_app, auth, expiry_header="X-Token-Expiry").expiry_header == "X-Token-Expiry"


@pytest.mark.parametrize(
    ("key", "value", "error", "message"),
    [
        ("PAT_EXPIRY_HEADER", HEADER_INJECTIONS[0], ValueError, "PAT_EXPIRY_HEADER: expiry_header must be"),
        ("PAT_EXEMPT", 5, TypeError, "exempt must be a path or a list of paths, not int"),
        ("PAT_EXEMPT", None, TypeError, "exempt must be a path or a list of paths, not NoneType"),
        ("PAT_REALM", "\u20acuro", ValueError, "realm must be printable ASCII"),
    ],
)
def test_flask_config_errors_name_the_setting_at_start_up(key: str, value: Any, error: type, message: str) -> None:
    app = Flask("x")
    app.config.update({"PAT_STORE_URL": "memory://", key: value})
    with pytest.raises(error, match=message):
        PAT(app)


@pytest.mark.parametrize("realm", ["", None])
def test_an_empty_flask_realm_is_the_default_as_in_the_environment(realm: Any) -> None:
    app = Flask("x")
    app.config.update({"PAT_STORE_URL": "memory://", "PAT_REALM": realm})
    assert PAT(app).auth.realm == "api"
    assert PATAuth.from_env({"PAT_STORE_URL": "memory://", "PAT_REALM": ""}).realm == "api"
