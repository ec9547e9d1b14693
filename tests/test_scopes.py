"""Scope grammar, implication and matching."""

from __future__ import annotations

import re
from typing import Any

import pytest

from pat_middleware.core.scopes import ScopeRules, normalize_scopes, satisfies, validate_scope


@pytest.mark.parametrize("scope", ["repo", "repo:read", "admin:*", "a/b.c-d_e", "!#$%&'()*+,-./"])
def test_valid_scopes(scope: str) -> None:
    assert validate_scope(scope) == scope


@pytest.mark.parametrize("scope", ["", "has space", 'quo"te', "back\\slash", "tab\t", "é", "x" * 129, 5])
def test_invalid_scopes(scope: object) -> None:
    with pytest.raises(ValueError):
        validate_scope(scope)  # type: ignore[arg-type]


def test_normalize_sorts_dedupes_and_splits_strings() -> None:
    assert normalize_scopes(["b", "a", "b"]) == ("a", "b")
    assert normalize_scopes("repo  user:read") == ("repo", "user:read")
    assert normalize_scopes([]) == ()


def test_all_of_and_any_of() -> None:
    granted = frozenset({"repo:read", "user"})
    assert satisfies(granted, ["repo:read"])
    assert satisfies(granted, ["repo:read", "user"])
    assert not satisfies(granted, ["repo:read", "repo:write"])
    assert satisfies(granted, ["repo:write", "user"], any_of=True)
    assert not satisfies(granted, ["repo:write", "admin"], any_of=True)
    assert satisfies(granted, [])


def test_wildcards_grant_by_prefix_only() -> None:
    granted = frozenset({"admin:*", "repo:issues:*"})
    assert satisfies(granted, ["admin:org"])
    assert satisfies(granted, ["admin:org:write"])
    assert satisfies(granted, ["repo:issues:write"])
    assert not satisfies(granted, ["admin"])
    assert not satisfies(granted, ["repo:read"])
    assert not satisfies(granted, ["administrator:x"])


def test_implication_rules_are_transitive() -> None:
    rules = ScopeRules({"admin": ["repo", "user"], "repo": ["repo:read", "repo:write"]})
    assert rules.expand(["admin"]) == {"admin", "repo", "user", "repo:read", "repo:write"}
    assert rules.expand(["repo:read"]) == {"repo:read"}


def test_implication_cycles_terminate() -> None:
    rules = ScopeRules({"a": ["b"], "b": ["a"]})
    assert rules.expand(["a"]) == {"a", "b"}


def test_rules_validate_their_scopes() -> None:
    with pytest.raises(ValueError):
        ScopeRules({"bad scope": ["x"]})


def test_route_requirements_are_checked_the_same_everywhere() -> None:
    from pat_middleware.core.scopes import requirement
    from pat_middleware.fastapi import RequireScopes
    from pat_middleware.flask import scopes_required
    from pat_middleware.starlette import requires_scopes

    assert requirement(["b", "a", "b"]) == ("b", "a")
    assert requirement([]) == ()
    for make in (requires_scopes, scopes_required, RequireScopes):
        with pytest.raises(ValueError):
            make(any=True)  # "one of nothing" is a mistake
        with pytest.raises(ValueError):
            make("bad scope")
        make("a", "b", any=True)


def _view() -> None:
    return None


def _decorators() -> dict[str, Any]:
    from pat_middleware.fastapi import RequireScopes
    from pat_middleware.flask import scopes_required
    from pat_middleware.starlette import requires_scopes

    return {"requires_scopes": requires_scopes, "scopes_required": scopes_required, "RequireScopes": RequireScopes}


@pytest.mark.parametrize("name", ["requires_scopes", "scopes_required", "RequireScopes"])
@pytest.mark.parametrize(
    ("scopes", "options", "error", "message"),
    [
        (("repo read",), {}, ValueError, r"\(\): invalid scope 'repo read'.*; pass each scope as its own argument"),
        (('quo"te',), {}, ValueError, r"\(\): invalid scope 'quo\"te'"),
        (("",), {}, ValueError, r"\(\): invalid scope ''"),
        (("x" * 129,), {}, ValueError, r"\(\): invalid scope 'x+'"),
        (("é",), {}, ValueError, r"\(\): invalid scope 'é'"),
        ((), {"any": True}, ValueError, r"\(\): any=True needs at least one scope"),
        ((["a", "b"],), {}, TypeError, r"\(\): scopes must be strings, got a list \(pass each scope as its own"),
        ((("a",),), {}, TypeError, r"\(\): scopes must be strings, got a tuple"),
        ((b"repo",), {}, TypeError, r"\(\): scopes must be strings, got bytes"),
        (("a", None), {}, TypeError, r"\(\): scopes must be strings, got NoneType"),
        (("a", any), {}, TypeError, r"\(\): scopes must be strings, got the builtin any \(write any=True\)"),
        (("a", "b"), {"any": "yes"}, TypeError, r"\(\): any must be True or False, got str"),
        (("a", "b"), {"any": 1}, TypeError, r"\(\): any must be True or False, got int"),
        (("a",), {"any": None}, TypeError, r"\(\): any must be True or False, got NoneType"),
        ((_view,), {}, TypeError, r" must be called with its scopes: .* above test_scopes\._view"),
    ],
)
def test_route_decorators_refuse_bad_arguments_when_written(
    name: str, scopes: tuple[Any, ...], options: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Each would otherwise fail (or never match) only when a request arrives."""
    with pytest.raises(error, match=re.escape(name) + message):
        _decorators()[name](*scopes, **options)


@pytest.mark.parametrize("name", ["requires_scopes", "scopes_required", "RequireScopes"])
def test_route_decorators_accept_what_they_always_did(name: str) -> None:
    make = _decorators()[name]
    for scopes, options in [((), {}), (("a",), {}), (("a", "a:*", "b"), {"any": True}), (("a", "a"), {"any": False})]:
        make(*scopes, **options)
