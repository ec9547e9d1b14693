"""Starlette integration: the middleware and the ``requires_scopes`` decorator.

.. code-block:: python

    from pat_middleware.starlette import PATMiddleware, requires_scopes

    @requires_scopes("repo:read")
    async def repos(request):
        return JSONResponse({"user": request.user.identity})

    app = Starlette(routes=[Route("/repos", repos)], middleware=[Middleware(PATMiddleware, auth=auth)])
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from starlette.requests import HTTPConnection, Request
from starlette.websockets import WebSocket

from pat_middleware.auth import PATAuth
from pat_middleware.core.models import Principal, require
from pat_middleware.core.route_requirement import (
    ResourceOf,
    RouteRequirement,
    Target,
    describe,
    route_requirement,
)
from pat_middleware.errors import PATError
from pat_middleware.starlette.middleware import PATErrorResponse, rejection

__all__ = ["auth_of", "current_principal", "is_async_callable", "requires_scopes", "scope_error"]

F = TypeVar("F", bound=Callable[..., Any])


def is_async_callable(func: object) -> bool:
    """True for a coroutine function, a ``functools.partial`` of one, or an object
    whose ``__call__`` is one (what Starlette treats as an async endpoint)."""
    while isinstance(func, functools.partial):
        func = func.func
    call = type(func).__call__ if callable(func) and not inspect.isroutine(func) else None
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(call)


def auth_of(conn: HTTPConnection) -> PATAuth:
    """The ``PATAuth`` that ``PATMiddleware`` left in the scope (``RuntimeError`` without the middleware)."""
    try:
        auth: PATAuth = conn.scope["pat_auth"]
    except KeyError:
        raise RuntimeError("pat_middleware: PATMiddleware must be installed in front of this route") from None
    return auth


def current_principal(conn: HTTPConnection) -> Principal | None:
    """The principal of the request or WebSocket (``None`` when anonymous)."""
    auth_of(conn)
    principal: Principal | None = conn.scope["pat"]
    return principal


def scope_error(
    conn: HTTPConnection, scopes: tuple[str, ...], any_of: bool, required_by: RouteRequirement | None = None
) -> PATError | None:
    """The error to answer when the connection's token lacks ``scopes`` (or, with a
    ``resource`` in ``required_by``, is not valid for the request's resource), else ``None``.

    ``AuthenticationRequired`` (401, bare challenge) when anonymous,
    ``InsufficientScope`` (403) when the scopes are missing or the token is
    limited to other resources.
    """
    principal = current_principal(conn)
    resource = None
    if required_by is not None and principal is not None:
        resource = required_by.resource_id(conn, conn.path_params)
    try:
        require(principal, scopes, any_of, resource)
    except PATError as exc:
        return exc
    return None


def _connection(func: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> HTTPConnection:
    for value in (*args, *kwargs.values()):
        if isinstance(value, HTTPConnection):
            return value
    raise TypeError(f"requires_scopes: {describe(func)} was called without a Request or WebSocket argument")


def _connection_kind(target: Target) -> str | None:
    """``"http"``, ``"websocket"`` or ``"either"``: what the endpoint's connection
    parameter receives; ``None`` when it has none.

    Starlette's ``requires`` looks for a parameter named ``request`` or
    ``websocket``; a parameter annotated ``Request``, ``WebSocket`` or
    ``HTTPConnection`` (under any name) counts too.
    """
    assert target.signature is not None
    for parameter in target.signature.parameters.values():
        if parameter.name in ("request", "websocket"):
            return "http" if parameter.name == "request" else "websocket"
        annotation = parameter.annotation
        if isinstance(annotation, type) and issubclass(annotation, HTTPConnection):
            if issubclass(annotation, WebSocket):
                return "websocket"
            return "http" if issubclass(annotation, Request) else "either"
    return None


def _receives_a_connection(required: RouteRequirement, target: Target) -> str | None:
    if target.signature is None:
        return "its signature cannot be read, so it has no request or websocket parameter to find"
    kind = _connection_kind(target)
    if kind is None:
        return (
            'it has no "request" or "websocket" parameter (nor one annotated Request, WebSocket '
            "or HTTPConnection) to receive the connection"
        )
    if kind == "websocket" and not is_async_callable(target.func):
        return "it takes a WebSocket but is not async (Starlette awaits WebSocket endpoints)"
    return None


#: What ``requires_scopes`` checks in the endpoint it decorates (after the common checks).
ENDPOINT_CHECKS = (_receives_a_connection,)


def requires_scopes(*scopes: str, any: bool = False, resource: ResourceOf = None) -> Callable[[F], F]:
    """Require a token with all of ``scopes`` (with ``any=True``: at least one)
    and, with ``resource``, valid for the resource the request is about.

    ``resource`` is the name of a path parameter (``"repo"`` for
    ``/repos/{repo:path}``) or a callable taking the request and returning
    the resource id; a token limited to other resources gets 403
    ``insufficient_scope`` ("not valid for this resource", the id not echoed).

    Works on async and sync function endpoints, ``HTTPEndpoint`` methods and
    WebSocket function endpoints (``PATMiddleware`` must run in front).
    Without a token: 401 with a bare ``Bearer`` challenge; with a token
    lacking the scopes: 403 ``insufficient_scope``; both with the same JSON
    body as the middleware's errors. A refused WebSocket gets the HTTP
    answer through the denial-response extension, or a 1008 close before
    accept. No scopes: any valid token will do.

    Mistakes fail here, not as a 500 on the first request with a token:
    invalid scopes, ``any=True`` without scopes, a missing ``()``
    (``ValueError``/``TypeError``); an endpoint with no ``request`` or
    ``websocket`` parameter (like Starlette's ``requires``; one annotated
    ``Request``/``WebSocket``/``HTTPConnection`` also counts), a sync
    WebSocket endpoint, a class, a ``staticmethod`` object (``TypeError``).
    """
    required_by = route_requirement("requires_scopes", scopes, any, resource)
    required = required_by.scopes
    any_of = required_by.any_of
    by = required_by if required_by.resource is not None else None

    def decorator(func: F) -> F:
        required_by.check_target(func, ENDPOINT_CHECKS, class_hint="decorate its methods (get, post...) instead")
        if is_async_callable(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                conn = _connection(func, args, kwargs)
                denied = scope_error(conn, required, any_of, by)
                if denied is None:
                    return await func(*args, **kwargs)
                answer = rejection(denied, auth_of(conn).realm, conn.scope)
                if isinstance(conn, WebSocket):
                    await answer(conn.scope, conn.receive, conn.send)
                    return None
                return answer

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            conn = _connection(func, args, kwargs)
            denied = scope_error(conn, required, any_of, by)
            if denied is None:
                return func(*args, **kwargs)
            return PATErrorResponse(denied, auth_of(conn).realm)

        return cast(F, sync_wrapper)

    return decorator
