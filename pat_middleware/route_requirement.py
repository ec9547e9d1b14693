"""What a route decorator requires, checked when the decorator is written.

``requires_scopes`` (Starlette), ``scopes_required`` (Flask) and
``RequireScopes`` (FastAPI) share these checks, so a mistake that could only
fail at request time (a 500 on the first request that carries a token) fails
at import, with an error naming the decorator, the function and what is wrong.
Two stages, each a list of small checks:

* :func:`route_requirement`: the decorator's own arguments (scopes are valid
  strings, ``any`` is a bool and has scopes to choose from, the decorator was
  called at all); ``TypeError`` for a wrong kind of value, ``ValueError`` for
  a wrong value.
* :meth:`RouteRequirement.check_target`: what it decorates (a function, not a
  class or a ``staticmethod`` object), then the framework's own checks (the
  Starlette decorator needs a ``request`` or ``websocket`` parameter);
  ``TypeError``.

A new decorator option adds a field here, its argument check in
:func:`route_requirement` and, if it depends on the route, a
:data:`TargetCheck`.
"""

from __future__ import annotations

import builtins
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pat_middleware.scopes import requirement

__all__ = ["RouteRequirement", "Target", "TargetCheck", "describe", "route_requirement"]


def describe(target: object) -> str:
    """``module.qualname`` of a function or class (what error messages call it)."""
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    if not isinstance(name, str):
        return repr(target)
    module = getattr(target, "__module__", None)
    return f"{module}.{name}" if isinstance(module, str) else name


@dataclass(frozen=True)
class Target:
    """The function a route decorator is applied to."""

    func: Callable[..., Any]

    @property
    def name(self) -> str:
        return describe(self.func)

    @cached_property
    def signature(self) -> inspect.Signature | None:
        """Its signature, annotations evaluated where they can be (``None``: unreadable)."""
        try:
            return inspect.signature(self.func, eval_str=True)
        except Exception:  # an annotation that does not evaluate: keep the strings
            try:
                return inspect.signature(self.func)
            except (TypeError, ValueError):
                return None


#: A check of the decorated function: a description of the problem, or ``None``.
TargetCheck = Callable[["RouteRequirement", Target], "str | None"]


@dataclass(frozen=True)
class RouteRequirement:
    """A decorator's validated arguments: the scopes (in order, no duplicates) and ``any``."""

    decorator: str
    scopes: tuple[str, ...]
    any_of: bool = False

    def __str__(self) -> str:
        arguments = [repr(scope) for scope in self.scopes]
        if self.any_of:
            arguments.append("any=True")
        return f"{self.decorator}({', '.join(arguments)})"

    def check_target(self, func: object, checks: Sequence[TargetCheck] = (), *, class_hint: str = "") -> Target:
        """``func`` as a :class:`Target`, or ``TypeError`` naming it and what is wrong with it.

        The common checks run first, then ``checks`` (the framework's), in order.
        ``class_hint`` says what to do instead when ``func`` is a class.
        """
        problem = _not_a_function(func, class_hint)
        if problem is None:
            assert callable(func)
            target = Target(func)
            problem = next((p for check in checks if (p := check(self, target)) is not None), None)
            if problem is None:
                return target
        raise TypeError(f"@{self} cannot decorate {describe(func)}: {problem}")


def _not_a_function(func: object, class_hint: str) -> str | None:
    if isinstance(func, staticmethod | classmethod):
        kind = type(func).__name__
        return f"it is a {kind} object; put @{kind} above the scope decorator, not below it"
    if inspect.isclass(func):
        return f"it is a class; {class_hint}" if class_hint else "it is a class, not a function"
    if not callable(func):
        return f"it is not a function but a {type(func).__name__}"
    return None


def route_requirement(decorator: str, scopes: Sequence[object], any_of: object = False) -> RouteRequirement:
    """Check a decorator's arguments: ``TypeError`` or ``ValueError`` naming ``decorator``.

    * called at all: ``@requires_scopes`` without parentheses passes the
      function as the only "scope";
    * each scope a string (a list passed as one argument is the usual slip),
      a valid RFC 6749 scope (no spaces: one scope per argument);
    * ``any`` a bool, and with ``any=True`` at least one scope.
    """
    if len(scopes) == 1 and callable(scopes[0]) and scopes[0] is not builtins.any:
        raise TypeError(
            f"@{decorator} must be called with its scopes: write @{decorator}('scope') "
            f"(or @{decorator}() for any valid token) above {describe(scopes[0])}"
        )
    for scope in scopes:
        if not isinstance(scope, str):
            raise TypeError(f"{decorator}(): scopes must be strings, got {_kind(scope)}")
    if not isinstance(any_of, bool):
        raise TypeError(f"{decorator}(): any must be True or False, got {type(any_of).__name__}")
    try:
        required = requirement([s for s in scopes if isinstance(s, str)], any_of)
    except ValueError as exc:
        spaced = any(isinstance(s, str) and " " in s for s in scopes)
        hint = "; pass each scope as its own argument" if spaced else ""
        raise ValueError(f"{decorator}(): {exc}{hint}") from None
    return RouteRequirement(decorator, required, any_of)


def _kind(value: object) -> str:
    if value is builtins.any:
        return "the builtin any (write any=True)"
    if isinstance(value, list | tuple | set | frozenset):
        return f"a {type(value).__name__} (pass each scope as its own argument)"
    return type(value).__name__
