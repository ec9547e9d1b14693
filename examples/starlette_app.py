"""A small Starlette API protected by personal access tokens.

Run it::

    uvicorn examples.starlette_app:app                      # tokens in ./pat_tokens.db
    PAT_STORE_URL=sqlite:////tmp/t.db PAT_CACHE_URL=redis://localhost:6379/0 uvicorn examples.starlette_app:app

``PAT_CACHE_PREFIX`` (default ``pat:``) namespaces the Redis keys and the
invalidation channel, for several apps on one Redis.

Mint a token (``pat create demo ci --scope repo:read``, or
``PATAuth.from_url(...).manager.create(...)``) and call it::

    curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8000/repos

Routes:

* ``GET /`` and ``GET /health``: public; ``GET /health/live`` and ``GET /health/ready``
  (liveness, and readiness: 503 while the token store is unreachable);
* ``GET /user``: any valid token (sync endpoint);
* ``GET /repos``: ``repo:read``; ``POST /repos``: ``repo:write`` (an ``HTTPEndpoint``);
* ``GET /repos/{name}``: ``repo:read`` for that repository (a token limited to
  resources must list it: ``resource="name"``);
* ``WS /ws/events``: ``events:read``, checked at the handshake;
* ``/api/tokens...``: the token management REST API (session user, or a
  token with ``tokens:manage``), ``/api/openapi.json``;
* ``/settings/tokens``: the token settings page, after the demo ``/login``;
* ``/admin/...``: the administration API (every user's tokens, revoke by filter,
  the inactivity sweep, the security log; ``/admin/openapi.json``) for the users
  named in ``PAT_ADMIN_USERS`` (comma-separated; nobody by default) once logged in.

``PAT_SESSION_SECRET`` signs the session cookie (a random one per process
when unset: logins then do not survive a restart or span workers).

Behind a reverse proxy, run uvicorn with ``--proxy-headers
--forwarded-allow-ips=<proxy ip>`` so tokens restricted to CIDR blocks see
the real client address.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.endpoints import HTTPEndpoint
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from pat_middleware import PATAuth
from pat_middleware.cli.demo import AFTER_LOGIN, LOGIN_FORM, SCOPES, user_from_form
from pat_middleware.starlette import (
    PATMiddleware,
    admin_routes,
    health_route,
    requires_scopes,
    settings_route,
    token_routes,
)

__all__ = ["admin_user", "app", "create_app", "management_routes", "session_user"]


async def home(request: Request) -> JSONResponse:
    """Public: says who is calling, if anyone."""
    user = request.user
    return JSONResponse({"service": "pat-middleware example", "user": user.identity or None})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


@requires_scopes()
def current_user(request: Request) -> JSONResponse:
    """Any valid token: the token's owner and what the token may do."""
    principal = request.scope["pat"]
    return JSONResponse(
        {
            "user": request.user.identity,
            "token_id": principal.token_id,
            "token_name": principal.token_name,
            "scopes": sorted(request.auth.scopes),
            "expires_at": principal.expires_at.isoformat() if principal.expires_at else None,
        }
    )


class Repos(HTTPEndpoint):
    """The caller's repositories (kept in memory, per user)."""

    @requires_scopes("repo:read")
    async def get(self, request: Request) -> JSONResponse:
        repos: dict[str, list[str]] = request.app.state.repos
        return JSONResponse({"repos": repos.get(request.user.identity, [])})

    @requires_scopes("repo:write")
    async def post(self, request: Request) -> JSONResponse:
        try:
            payload = await request.json()
        except (ValueError, UnicodeDecodeError, ClientDisconnect):
            payload = None
        name = payload.get("name") if isinstance(payload, dict) else None
        if not isinstance(name, str) or not name.strip() or not name.isprintable():
            return JSONResponse(
                {"error": "invalid_request", "error_description": 'send JSON {"name": "<repository name>"}'},
                status_code=400,
            )
        repos: dict[str, list[str]] = request.app.state.repos
        repos.setdefault(request.user.identity, []).append(name.strip())
        return JSONResponse({"name": name.strip(), "owner": request.user.identity}, status_code=201)


@requires_scopes("repo:read", resource="name")
async def repo(request: Request) -> JSONResponse:
    """One repository: a fine-grained token must be limited to it (or to every resource)."""
    name = request.path_params["name"]
    repos: dict[str, list[str]] = request.app.state.repos
    return JSONResponse({"name": name, "exists": name in repos.get(request.user.identity, [])})


@requires_scopes("events:read")
async def events(websocket: WebSocket) -> None:
    """A welcome event, then every text message echoed back as an event."""
    await websocket.accept()
    await websocket.send_json({"event": "hello", "user": websocket.user.identity})
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_json({"event": "echo", "data": text})
    except WebSocketDisconnect:
        pass


async def login(request: Request) -> Response:
    """The demo login: a user name, no password; the session remembers it."""
    if request.method == "GET":
        return HTMLResponse(LOGIN_FORM)
    try:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
    except ClientDisconnect:  # the client went away mid-body
        return Response("the request body was cut short", status_code=400)
    request.session.clear()
    user = user_from_form(form.get("username", [""])[0])
    if user:
        request.session["user"] = user
    return RedirectResponse(AFTER_LOGIN, status_code=303)


def session_user(request: Request) -> str | None:
    """The signed-in user (the management mounts' ``current_user``)."""
    value = request.scope.get("session", {}).get("user")
    return value if isinstance(value, str) else None


def admin_user(request: Request) -> bool:
    """The admin API's ``is_admin``: the signed-in user is listed in ``PAT_ADMIN_USERS``.

    A login, not a token scope: with the example's open policy any user could
    give themselves a token with any scope (see docs/management.md, "Administration")."""
    admins = {name.strip() for name in os.environ.get("PAT_ADMIN_USERS", "").split(",") if name.strip()}
    return session_user(request) in admins


def management_routes(auth: PATAuth, **page_options: Any) -> list[BaseRoute]:
    """Demo login at /login, the REST API at /api, the settings page at /settings/tokens."""
    options = {"available_scopes": SCOPES, "login_url": "/login", **page_options}
    return [
        Route("/login", login, methods=["GET", "POST"]),
        token_routes(auth, session_user),
        settings_route(auth, session_user, **options),
    ]


def create_app(
    auth: PATAuth,
    *,
    extra_routes: Sequence[BaseRoute] = (),
    close_auth: bool = True,
    session_secret: str | None = None,
) -> Starlette:
    """The example API on ``auth``, with token management and the settings page.

    ``extra_routes`` are mounted next to the API. With ``close_auth`` the
    app's lifespan closes ``auth`` on shutdown. ``session_secret`` signs the
    session cookie (default: ``PAT_SESSION_SECRET``, else random).
    """
    secret = session_secret or os.environ.get("PAT_SESSION_SECRET") or secrets.token_hex(32)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if close_auth:
            await auth.aclose()

    routes: list[BaseRoute] = [
        Route("/", home),
        Route("/health", health),
        health_route(auth),
        Route("/user", current_user),
        Route("/repos", Repos),
        Route("/repos/{name}", repo),
        WebSocketRoute("/ws/events", events),
        *management_routes(auth),
        admin_routes(auth, is_admin=admin_user, current_user=session_user),
        *extra_routes,
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(SessionMiddleware, secret_key=secret, same_site="strict"),
            Middleware(PATMiddleware, auth=auth),
        ],
        lifespan=lifespan,
    )
    app.state.auth = auth
    app.state.repos = {}
    return app


#: For ``uvicorn examples.starlette_app:app``: configured by the ``PAT_*`` variables
#: (``PAT_STORE_URL``, default ``sqlite:///pat_tokens.db``; ``PAT_CACHE_URL``...).
#: The store is opened on first use.
app = create_app(PATAuth.from_env())
