"""Scope grammar (RFC 6749 §3.3), implication rules and matching.

A scope is one or more printable ASCII characters other than space, ``"``
and ``\\``. Two ways one scope can grant another:

* implication rules, e.g. ``{"repo": {"repo:read", "repo:write"}}``, are
  applied once, when a token is verified (:meth:`ScopeRules.expand`);
* a granted scope ending in ``:*`` grants every scope with that prefix
  (``admin:*`` grants ``admin:org`` and ``admin:org:write``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["ScopeRules", "normalize_scopes", "requirement", "satisfies", "validate_scope"]

_SCOPE_RE = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")
MAX_SCOPE_LENGTH = 128


def validate_scope(scope: str) -> str:
    """Return ``scope`` if it is a valid RFC 6749 scope-token, else raise ValueError."""
    if not isinstance(scope, str) or len(scope) > MAX_SCOPE_LENGTH or not _SCOPE_RE.fullmatch(scope):
        raise ValueError(
            f"invalid scope {scope!r}: use 1-{MAX_SCOPE_LENGTH} printable ASCII characters, "
            "no spaces, quotes or backslashes"
        )
    return scope


def normalize_scopes(scopes: Iterable[str] | str) -> tuple[str, ...]:
    """Validate scopes and return them sorted without duplicates.

    A single string is split on spaces, as in an OAuth ``scope`` parameter.
    """
    items = scopes.split() if isinstance(scopes, str) else list(scopes)
    return tuple(sorted({validate_scope(s) for s in items}))


def requirement(scopes: Iterable[str], any_of: bool = False) -> tuple[str, ...]:
    """What a route decorator requires: valid scopes, without duplicates, in order.

    Raises ValueError for an invalid scope, or for ``any_of`` with no scopes
    (no scope could ever be "one of" them: refused as a mistake).
    """
    required = tuple(dict.fromkeys(validate_scope(s) for s in scopes))
    if any_of and not required:
        raise ValueError("any=True needs at least one scope")
    return required


def _grants(granted: frozenset[str], wanted: str) -> bool:
    if wanted in granted:
        return True
    # Wildcards: "a:*" grants "a:x"; "a:b:*" grants "a:b:c".
    parts = wanted.split(":")
    return any(":".join(parts[:i]) + ":*" in granted for i in range(1, len(parts)))


def satisfies(granted: frozenset[str], required: Iterable[str], any_of: bool = False) -> bool:
    """True when ``granted`` covers all (or with ``any_of`` any) of ``required``.

    An empty ``required`` is always satisfied.
    """
    wanted = list(required)
    if not wanted:
        return True
    check = any if any_of else all
    return check(_grants(granted, w) for w in wanted)


@dataclass(frozen=True)
class ScopeRules:
    """Implication rules: a granted scope implies others, transitively."""

    implies: Mapping[str, Iterable[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, values in self.implies.items():
            validate_scope(key)
            for value in values:
                validate_scope(value)

    def expand(self, scopes: Iterable[str]) -> frozenset[str]:
        """The closure of ``scopes`` under the implication rules."""
        result = set(scopes)
        pending = list(result)
        while pending:
            for implied in self.implies.get(pending.pop(), ()):
                if implied not in result:
                    result.add(implied)
                    pending.append(implied)
        return frozenset(result)
