"""Apps for the token management tests: the REST API and the settings page, mounted in
Starlette and in Flask, each behind the library's own middleware.

The API apps take the "session user" from an ``X-User`` header (a host app behind
an authenticating proxy does exactly this); the settings page apps have a real
signed-cookie session and a demo login form.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx
from flask import Flask
from flask import request as flask_request
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from examples.flask_app import add_management
from examples.starlette_app import management_routes
from pat_middleware import PATAuth
from pat_middleware.flask import admin_blueprint, settings_blueprint, token_blueprint
from pat_middleware.starlette import PATMiddleware, admin_routes, settings_route, token_routes
from pat_middleware.wsgi import PATMiddleware as WSGIPATMiddleware

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

FRAMEWORKS = ("starlette", "flask")


SECRET = "test-session-secret-not-for-production"


# -- the REST API -------------------------------------------------------------------
def starlette_api(auth: PATAuth, **options: Any) -> Starlette:
    """The API at /api; session user from ``X-User``; a token-protected /whoami."""

    async def whoami(request: Request) -> Response:
        principal = request.scope.get("pat")
        return Response(principal.user_id if principal else "anonymous")

    routes = [token_routes(auth, lambda request: request.headers.get("x-user"), **options), Route("/whoami", whoami)]
    return Starlette(routes=routes, middleware=[Middleware(PATMiddleware, auth=auth)])


def flask_api(auth: PATAuth, **options: Any) -> Flask:
    """The same app in Flask."""
    app = Flask("pat_api_test")
    app.register_blueprint(token_blueprint(auth, lambda: flask_request.headers.get("X-User"), **options))

    @app.get("/whoami")
    def whoami() -> str:
        principal = flask_request.environ.get("pat.principal")
        return principal.user_id if principal else "anonymous"

    app.wsgi_app = WSGIPATMiddleware(app.wsgi_app, auth)  # type: ignore[method-assign]
    return app


@contextmanager
def client_for(app: Any) -> Iterator[httpx.Client]:
    """An httpx client over the app in-process (ASGI through Starlette's TestClient, WSGI through httpx)."""
    if isinstance(app, Flask):
        with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://testserver") as client:
            yield client
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            client = TestClient(app, base_url="http://testserver")
        with client:
            yield client


API_APPS: Mapping[str, Callable[..., Any]] = {"starlette": starlette_api, "flask": flask_api}


# -- the admin API ---------------------------------------------------------------------
#: The admin tests' admin scope.
ADMIN_SCOPE = "admin"


def _admin_options(framework: str, options: dict[str, Any]) -> dict[str, Any]:
    """By default: ``admin_scope="admin"``; ``is_admin``: an ``X-Admin: yes`` header;
    ``current_user``: the ``X-User`` header (a host behind an authenticating proxy)."""
    if framework == "starlette":
        defaults: dict[str, Any] = {
            "is_admin": lambda request: request.headers.get("x-admin") == "yes",
            "current_user": lambda request: request.headers.get("x-user"),
        }
    else:
        defaults = {
            "is_admin": lambda: flask_request.headers.get("X-Admin") == "yes",
            "current_user": lambda: flask_request.headers.get("X-User"),
        }
    return {"admin_scope": ADMIN_SCOPE, **defaults, **options}


def starlette_admin(auth: PATAuth, **options: Any) -> Starlette:
    """:func:`starlette_api` plus the admin API at /admin (see :func:`_admin_options`)."""
    app = starlette_api(auth)
    app.router.routes.append(admin_routes(auth, **_admin_options("starlette", options)))
    return app


def flask_admin(auth: PATAuth, **options: Any) -> Flask:
    """:func:`flask_api` plus the admin blueprint at /admin."""
    app = flask_api(auth)
    app.register_blueprint(admin_blueprint(auth, **_admin_options("flask", options)))
    return app


ADMIN_APPS: Mapping[str, Callable[..., Any]] = {"starlette": starlette_admin, "flask": flask_admin}


# -- the settings page, with the examples' demo login ---------------------------------------
starlette_management = management_routes


def flask_management(app: Flask, auth: PATAuth | None = None, **options: Any) -> Flask:
    """Add the examples' demo login, the API and the page to ``app`` (``auth=None``: the PAT extension)."""
    add_management(app, auth, **options)
    return app


def starlette_site(auth: PATAuth, *, sessions: bool = True, **options: Any) -> Starlette:
    """A Starlette app with :func:`starlette_management` behind the PAT and session middleware."""
    middleware = [Middleware(PATMiddleware, auth=auth)]
    if sessions:
        middleware.insert(0, Middleware(SessionMiddleware, secret_key=SECRET, same_site="strict"))
    return Starlette(routes=starlette_management(auth, **options), middleware=middleware)


def flask_site(auth: PATAuth, *, sessions: bool = True, **options: Any) -> Flask:
    """A Flask app with :func:`flask_management` behind the WSGI PAT middleware."""
    app = Flask("pat_site_test")
    if sessions:
        app.secret_key = SECRET
    app.config["SESSION_COOKIE_SAMESITE"] = "Strict"
    flask_management(app, auth, **options)
    app.wsgi_app = WSGIPATMiddleware(app.wsgi_app, auth)  # type: ignore[method-assign]
    return app


SITE_APPS: Mapping[str, Callable[..., Any]] = {"starlette": starlette_site, "flask": flask_site}


# -- whatever the host's current_user returns -----------------------------------------------
#: Session users no token can belong to (``check_user_id`` refuses them, or they are not strings).
BAD_SESSION_USERS: tuple[object, ...] = (
    "\x00",
    "alice\x00",
    " ",
    "\t",
    "a" * 256,
    "a" * 300,
    "ok\u200b",
    "\ud800",
    "\x1b[31mred",
    42,
    0,
    True,
    b"alice",
    ["alice"],
)
#: Session users that mean "nobody is logged in".
NO_SESSION_USERS: tuple[object, ...] = (None, "")


class SessionUser:
    """The host app's ``current_user``, returning whatever the test sets (Starlette passes
    the request, Flask nothing); ``awaitable``: an async ``current_user`` (Starlette only)."""

    def __init__(self, value: object = "alice", *, awaitable: bool = False) -> None:
        self.value = value
        self.awaitable = awaitable

    def __call__(self, *request: Any) -> Any:
        if self.awaitable:

            async def later() -> object:
                return self.value

            return later()
        return self.value


def session_user_site(framework: str, auth: PATAuth, current_user: SessionUser) -> Any:
    """The API at /api and the page at /settings/tokens (no login_url), ``current_user`` as the
    host's login, a real session for the page's CSRF token, behind the PAT middleware."""
    if framework == "starlette":
        routes = [token_routes(auth, current_user), settings_route(auth, current_user)]
        middleware = [Middleware(SessionMiddleware, secret_key=SECRET), Middleware(PATMiddleware, auth=auth)]
        return Starlette(routes=routes, middleware=middleware)
    app = Flask("pat_session_user_test")
    app.secret_key = SECRET
    app.register_blueprint(token_blueprint(auth, current_user))
    app.register_blueprint(settings_blueprint(auth, current_user))
    app.wsgi_app = WSGIPATMiddleware(app.wsgi_app, auth)  # type: ignore[method-assign]
    return app
