"""Starlette (and FastAPI): the pure ASGI middleware, the route decorator and the
management mounts.

.. code-block:: python

    from pat_middleware.starlette import PATMiddleware, requires_scopes, token_routes
"""

from pat_middleware.starlette.decorators import auth_of, current_principal, requires_scopes, scope_error
from pat_middleware.starlette.middleware import PATErrorResponse, PATMiddleware, PATUser
from pat_middleware.starlette.routes import (
    CurrentUser,
    IsAdmin,
    admin_routes,
    health_route,
    settings_route,
    token_routes,
)

__all__ = [
    "CurrentUser",
    "IsAdmin",
    "PATErrorResponse",
    "PATMiddleware",
    "PATUser",
    "admin_routes",
    "auth_of",
    "current_principal",
    "health_route",
    "requires_scopes",
    "scope_error",
    "settings_route",
    "token_routes",
]
