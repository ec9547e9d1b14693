"""FastAPI integration: ``RequireScopes`` dependencies on top of ``PATMiddleware``.

.. code-block:: python

    from fastapi import Depends, FastAPI
    from pat_middleware.fastapi import RequireScopes, register_error_handler
    from pat_middleware.starlette import PATMiddleware

    app = FastAPI()
    app.add_middleware(PATMiddleware, auth=auth)
    register_error_handler(app)           # JSON bodies identical to the middleware's

    @app.get("/repos")
    async def repos(principal: Principal = Depends(RequireScopes("repo:read"))): ...

The middleware verifies the token; the dependency only reads the principal
it left in the scope and checks scopes with the core's ``require``. Every
``RequireScopes`` declares the ``PAT`` HTTP bearer security scheme in the
OpenAPI document (so "Authorize" in the docs UI sends the header).

A refusal raises :class:`PATHTTPException` (an ``HTTPException``: right status,
``WWW-Authenticate`` and ``Cache-Control``) on HTTP routes and
:class:`PATWebSocketException` (closes 1008 before accept) on WebSocket
routes. Both work with FastAPI's default handlers; after
:func:`register_error_handler`, both are answered exactly as the middleware
answers (the core's JSON body; a WebSocket denial response where the server
offers one).
"""

from __future__ import annotations

import logging
from typing import Annotated, cast

from fastapi import FastAPI, Security
from fastapi.exceptions import HTTPException, WebSocketException
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, HTTPExceptionHandler

from pat_middleware.core.models import Principal
from pat_middleware.core.route_requirement import ResourceOf, route_requirement
from pat_middleware.errors import PATError
from pat_middleware.starlette.decorators import auth_of, current_principal, scope_error
from pat_middleware.starlette.middleware import close_code, rejection

__all__ = [
    "MISSING_MIDDLEWARE",
    "PATBearer",
    "PATHTTPException",
    "PATWebSocketException",
    "RequireScopes",
    "pat_bearer",
    "pat_exception_handler",
    "register_error_handler",
]

logger = logging.getLogger("pat_middleware")


class PATBearer(SecurityBase):
    """The OpenAPI ``http``/``bearer`` security scheme; as a dependency it returns
    the request's principal (``None`` when anonymous) without reading any header."""

    def __init__(self, *, scheme_name: str = "PAT", description: str | None = None) -> None:
        self.model = HTTPBearerModel(
            bearerFormat="personal access token",
            description=description or "A personal access token: `Authorization: Bearer <token>`.",
        )
        self.scheme_name = scheme_name

    async def __call__(self, conn: HTTPConnection) -> Principal | None:
        if "pat_auth" not in conn.scope:
            raise _missing_middleware(conn)
        return current_principal(conn)


#: The scheme every ``RequireScopes`` declares.
pat_bearer = PATBearer()


class PATHTTPException(HTTPException):
    """A refusal on an HTTP route; carries the core error in ``pat_error``."""

    def __init__(self, error: PATError, realm: str) -> None:
        headers = dict(error.headers(realm))
        headers["Cache-Control"] = "no-store"
        super().__init__(error.status_code, error.description, headers)
        self.pat_error = error
        self.realm = realm


class PATWebSocketException(WebSocketException):
    """A refusal on a WebSocket route (closed with :func:`~pat_middleware.starlette.middleware.close_code`
    by FastAPI's default handler)."""

    def __init__(self, error: PATError, realm: str) -> None:
        super().__init__(close_code(error), error.error or "unauthorized")
        self.pat_error = error
        self.realm = realm


#: What a route using ``RequireScopes`` answers (500) and logs when no ``PATMiddleware`` runs before it.
MISSING_MIDDLEWARE = (
    "PATMiddleware is not installed in front of this route: "
    "add app.add_middleware(PATMiddleware, auth=auth) (from pat_middleware.starlette)"
)


def _missing_middleware(conn: HTTPConnection) -> HTTPException:
    """The 500 a misconfigured app answers, naming what is missing (also logged, with the path)."""
    logger.error("%s (path %s)", MISSING_MIDDLEWARE, conn.url.path)
    return HTTPException(500, MISSING_MIDDLEWARE)


class _CalledOnly:
    """``RequireScopes.__signature__``: on an instance, nothing (its ``__call__`` is the
    dependency); on the class, a ``TypeError``.

    ``Depends(RequireScopes)`` (no parentheses) would make FastAPI call the class
    itself for every request, its ``*scopes`` a required query parameter: a 422
    or a 500 at request time. FastAPI reads the dependency's signature when
    the route is declared, so this fails there instead.
    """

    def __get__(self, instance: object, owner: type | None = None) -> None:
        if instance is None:
            raise TypeError(
                "RequireScopes must be called with its scopes: Depends(RequireScopes('scope')) "
                "(or Depends(RequireScopes()) for any valid token), not Depends(RequireScopes)"
            )
        return None


class RequireScopes:
    """A dependency requiring a token with all of ``scopes`` (``any=True``: one of).

    Returns the :class:`~pat_middleware.core.models.Principal`. Use as
    ``Depends(RequireScopes("repo:read"))`` in a parameter or in
    ``dependencies=[...]``; no scopes means any valid token. Invalid scopes,
    ``any=True`` without scopes (``ValueError``/``TypeError``) and
    ``Depends(RequireScopes)`` without the call (``TypeError``, when the
    route is declared) fail at start-up, not at request time.

    ``resource``: the name of a path parameter, or a callable taking the
    request and returning the resource id the request is about; a token
    limited to other resources gets 403 ``insufficient_scope``.
    """

    __signature__ = _CalledOnly()

    def __init__(self, *scopes: str, any: bool = False, resource: ResourceOf = None) -> None:
        required = route_requirement("RequireScopes", scopes, any, resource)
        self.scopes = required.scopes
        self.any_of = required.any_of
        self.resource = required.resource
        self._required = required if required.resource is not None else None

    async def __call__(
        self, conn: HTTPConnection, principal: Annotated[Principal | None, Security(pat_bearer)]
    ) -> Principal:
        denied = scope_error(conn, self.scopes, self.any_of, self._required)
        if denied is not None:
            realm = auth_of(conn).realm
            if conn.scope["type"] == "websocket":
                raise PATWebSocketException(denied, realm)
            raise PATHTTPException(denied, realm)
        assert principal is not None
        return principal

    def __repr__(self) -> str:
        resource = f", resource={self.resource!r}" if self.resource is not None else ""
        return f"RequireScopes({', '.join(map(repr, self.scopes))}, any={self.any_of}{resource})"


async def pat_exception_handler(conn: HTTPConnection, exc: PATHTTPException | PATWebSocketException) -> ASGIApp:
    """Answer a refusal exactly as ``PATMiddleware`` answers (the core's JSON body)."""
    return rejection(exc.pat_error, exc.realm, conn.scope)


def register_error_handler(app: FastAPI) -> None:
    """Install :func:`pat_exception_handler` for both refusal exceptions."""
    # Starlette runs whatever ASGI app a handler returns (for WebSockets too); its
    # ExceptionHandler alias only names Response.
    handler = cast(HTTPExceptionHandler, pat_exception_handler)
    app.add_exception_handler(PATHTTPException, handler)
    app.add_exception_handler(PATWebSocketException, handler)
