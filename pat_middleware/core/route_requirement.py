"""What a route decorator requires, checked when the decorator is written.

``requires_scopes`` (Starlette), ``scopes_required`` (Flask) and
``RequireScopes`` (FastAPI) share these checks, so a mistake that could only
fail at request time (a 500 on the first request that carries a token) fails
at import, with an error naming the decorator, the function and what is wrong.
Two stages, each a list of small checks:

* :func:`route_requirement`: the decorator's own arguments (scopes are valid
  strings, ``any`` is a bool and has scopes to choose from, ``resource`` is a
  parameter name or a callable, the decorator was called at all); ``TypeError``
  for a wrong kind of value, ``ValueError`` for a wrong value.
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pat_middleware.core.scopes import requirement

__all__ = [
    "ResourceOf",
    "RouteRequirement",
    "Target",
    "TargetCheck",
    "describe",
    "receives_the_resource",
    "route_requirement",
]

#: Where a route finds the resource a request is about: the name of a path
#: parameter (view argument), or a callable taking the request.
ResourceOf = str | Callable[[Any], object] | None


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
    """A decorator's validated arguments: the scopes (in order, no duplicates), ``any``
    and where the request's resource is found (``resource``)."""

    decorator: str
    scopes: tuple[str, ...]
    any_of: bool = False
    resource: ResourceOf = None

    def __str__(self) -> str:
        arguments = [repr(scope) for scope in self.scopes]
        if self.any_of:
            arguments.append("any=True")
        if self.resource is not None:
            shown = repr(self.resource) if isinstance(self.resource, str) else describe(self.resource)
            arguments.append(f"resource={shown}")
        return f"{self.decorator}({', '.join(arguments)})"

    def resource_id(self, request: object, params: Mapping[str, Any] | None) -> str | None:
        """The resource id the request is about (``None``: the route names none).

        ``params`` are the route's path parameters (view arguments). A value that
        is not a string (an ``int`` path convertor) is turned into one; ``None``
        (from a callable: it could not tell) becomes ``""``, which no token
        limited to resources covers. A missing parameter is a ``LookupError``
        naming the decorator: the route and the decorator disagree.
        """
        where = self.resource
        if where is None:
            return None
        if isinstance(where, str):
            if params is None or where not in params:
                raise LookupError(f"@{self}: the route has no path parameter {where!r}")
            value = params[where]
        else:
            value = where(request)
        return "" if value is None else value if isinstance(value, str) else str(value)

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


def receives_the_resource(required: RouteRequirement, target: Target) -> str | None:
    """A view that receives its path parameters as arguments (Flask) must take the
    one ``resource`` names (or ``**kwargs``)."""
    name = required.resource
    if not isinstance(name, str) or target.signature is None:
        return None
    parameters = target.signature.parameters.values()
    if any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return f"resource={name!r} names no parameter of it (the route's variable it receives)"


def route_requirement(
    decorator: str, scopes: Sequence[object], any_of: object = False, resource: object = None
) -> RouteRequirement:
    """Check a decorator's arguments: ``TypeError`` or ``ValueError`` naming ``decorator``.

    * called at all: ``@requires_scopes`` without parentheses passes the
      function as the only "scope";
    * each scope a string (a list passed as one argument is the usual slip),
      a valid RFC 6749 scope (no spaces: one scope per argument);
    * ``any`` a bool, and with ``any=True`` at least one scope;
    * ``resource`` ``None``, a path parameter's name (an identifier) or a
      callable taking the request.
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
    return RouteRequirement(decorator, required, any_of, _resource_of(decorator, resource))


def _resource_of(decorator: str, resource: object) -> ResourceOf:
    if resource is None:
        return None
    if isinstance(resource, str):
        if not resource.isidentifier():
            raise ValueError(
                f"{decorator}(): resource must name a path parameter (an identifier such as 'repo'), got {resource!r}"
            )
        return resource
    if inspect.isclass(resource) or not callable(resource):
        raise TypeError(
            f"{decorator}(): resource must be a path parameter's name or a callable taking the request, "
            f"got {type(resource).__name__}"
        )
    return resource


def _kind(value: object) -> str:
    if value is builtins.any:
        return "the builtin any (write any=True)"
    if isinstance(value, list | tuple | set | frozenset):
        return f"a {type(value).__name__} (pass each scope as its own argument)"
    return type(value).__name__
