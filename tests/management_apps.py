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
from urllib.parse import parse_qs

import httpx
from flask import Flask, redirect, session
from flask import request as flask_request
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from pat_middleware import PATAuth
from pat_middleware.flask_api import settings_blueprint, token_blueprint
from pat_middleware.starlette import PATMiddleware
from pat_middleware.starlette_api import settings_route, token_routes
from pat_middleware.wsgi import PATMiddleware as WSGIPATMiddleware

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

FRAMEWORKS = ("starlette", "flask")



SECRET = "test-session-secret-not-for-production"
SCOPES = {"repo:read": "Read repositories", "repo:write": "Push to repositories", "tokens:manage": "Manage tokens"}

LOGIN_FORM = """<!doctype html><title>Demo login</title>
<h1>Demo login (no password: for the example only)</h1>
<form method="post" action="/login"><label for="username">User name</label>
<input id="username" name="username" required><button type="submit" id="login">Log in</button></form>"""


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


# -- the settings page, with a demo login ------------------------------------------------
async def starlette_login(request: Request) -> Response:
    """The demo login: a user name, no password; the session remembers it."""
    if request.method == "GET":
        return HTMLResponse(LOGIN_FORM)
    name = parse_qs((await request.body()).decode()).get("username", [""])[0].strip()
    request.session.clear()
    if name:
        request.session["user"] = name
    return RedirectResponse("/settings/tokens", status_code=303)


def starlette_user(request: Request) -> str | None:
    """The session's user (``current_user`` of the Starlette mounts)."""
    value = request.scope.get("session", {}).get("user")
    return value if isinstance(value, str) else None


def starlette_management(auth: PATAuth, **options: Any) -> list[BaseRoute]:
    """Login at /login, the API at /api, the page at /settings/tokens."""
    page_options = {"available_scopes": SCOPES, "login_url": "/login", **options}
    return [
        Route("/login", starlette_login, methods=["GET", "POST"]),
        token_routes(auth, starlette_user),
        settings_route(auth, starlette_user, **page_options),
    ]


def starlette_site(auth: PATAuth, *, sessions: bool = True, **options: Any) -> Starlette:
    """A Starlette app with :func:`starlette_management` behind the PAT and session middleware."""
    middleware = [Middleware(PATMiddleware, auth=auth)]
    if sessions:
        middleware.insert(0, Middleware(SessionMiddleware, secret_key=SECRET, same_site="strict"))
    return Starlette(routes=starlette_management(auth, **options), middleware=middleware)


def flask_user() -> str | None:
    """The session's user (``current_user`` of the Flask mounts)."""
    value = session.get("user")
    return value if isinstance(value, str) else None


def flask_management(app: Flask, auth: PATAuth | None = None, **options: Any) -> Flask:
    """Add the demo login, the API and the page to ``app`` (``auth=None``: the app's PAT extension)."""

    def login() -> Any:
        if flask_request.method == "GET":
            return LOGIN_FORM
        session.clear()
        name = flask_request.form.get("username", "").strip()
        if name:
            session["user"] = name
        return redirect("/settings/tokens", code=303)

    app.add_url_rule("/login", "demo_login", login, methods=["GET", "POST"])
    app.register_blueprint(token_blueprint(auth, flask_user))
    page_options = {"available_scopes": SCOPES, "login_url": "/login", **options}
    app.register_blueprint(settings_blueprint(auth, flask_user, **page_options))
    return app


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
