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
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from starlette._utils import is_async_callable
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from .asgi import PATErrorResponse, PATMiddleware, PATUser, rejection
from .auth import PATAuth
from .core import require
from .errors import PATError
from .models import Principal
from .scopes import requirement

__all__ = ["PATErrorResponse", "PATMiddleware", "PATUser", "current_principal", "requires_scopes"]

F = TypeVar("F", bound=Callable[..., Any])


def _auth_of(conn: HTTPConnection) -> PATAuth:
    try:
        auth: PATAuth = conn.scope["pat_auth"]
    except KeyError:
        raise RuntimeError("pat_middleware: PATMiddleware must be installed in front of this route") from None
    return auth


def current_principal(conn: HTTPConnection) -> Principal | None:
    """The principal of the request or WebSocket (``None`` when anonymous)."""
    _auth_of(conn)
    principal: Principal | None = conn.scope["pat"]
    return principal


def scope_error(conn: HTTPConnection, scopes: tuple[str, ...], any_of: bool) -> PATError | None:
    """The error to answer when the connection's token lacks ``scopes``, else ``None``.

    ``AuthenticationRequired`` (401, bare challenge) when anonymous,
    ``InsufficientScope`` (403) when the scopes are missing.
    """
    principal = current_principal(conn)
    try:
        require(principal, scopes, any_of)
    except PATError as exc:
        return exc
    return None


def _connection(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> HTTPConnection:
    for value in (*args, *kwargs.values()):
        if isinstance(value, HTTPConnection):
            return value
    raise TypeError("requires_scopes: the endpoint must take a Request or WebSocket argument")


def requires_scopes(*scopes: str, any: bool = False) -> Callable[[F], F]:
    """Require a token with all of ``scopes`` (with ``any=True``: at least one).

    Works on async and sync function endpoints, ``HTTPEndpoint`` methods and
    WebSocket function endpoints (``PATMiddleware`` must run in front).
    Without a token: 401 with a bare ``Bearer`` challenge; with a token
    lacking the scopes: 403 ``insufficient_scope``; both with the same JSON
    body as the middleware's errors. A refused WebSocket gets the HTTP
    answer through the denial-response extension, or a 1008 close before
    accept. No scopes: any valid token will do.
    """
    required = requirement(scopes, any)
    any_of = any

    def decorator(func: F) -> F:
        if is_async_callable(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                conn = _connection(args, kwargs)
                denied = scope_error(conn, required, any_of)
                if denied is None:
                    return await func(*args, **kwargs)
                answer = rejection(denied, _auth_of(conn).realm, conn.scope)
                if isinstance(conn, WebSocket):
                    await answer(conn.scope, conn.receive, conn.send)
                    return None
                return answer

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            conn = _connection(args, kwargs)
            denied = scope_error(conn, required, any_of)
            if denied is None:
                return func(*args, **kwargs)
            return PATErrorResponse(denied, _auth_of(conn).realm)

        return sync_wrapper  # type: ignore[return-value]

    return decorator
