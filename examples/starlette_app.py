"""A small Starlette API protected by personal access tokens.

Run it::

    uvicorn examples.starlette_app:app                      # tokens in ./pat_demo.db
    PAT_STORE_URL=sqlite:////tmp/t.db PAT_CACHE_URL=redis://localhost:6379/0 uvicorn examples.starlette_app:app

``PAT_CACHE_PREFIX`` (default ``pat:``) namespaces the Redis keys and the
invalidation channel, for several apps on one Redis.

Mint a token (``pat create demo ci --scope repo:read``, or
``PATAuth.from_url(...).manager.create(...)``) and call it::

    curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8000/repos

Routes:

* ``GET /`` and ``GET /health``: public;
* ``GET /user``: any valid token (sync endpoint);
* ``GET /repos``: ``repo:read``; ``POST /repos``: ``repo:write`` (an ``HTTPEndpoint``);
* ``WS /ws/events``: ``events:read``, checked at the handshake.

Behind a reverse proxy, run uvicorn with ``--proxy-headers
--forwarded-allow-ips=<proxy ip>`` so tokens restricted to CIDR blocks see
the real client address.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.endpoints import HTTPEndpoint
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from pat_middleware import PATAuth
from pat_middleware.starlette import PATMiddleware, requires_scopes

__all__ = ["app", "create_app"]


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
        except (ValueError, UnicodeDecodeError):
            payload = None
        name = payload.get("name") if isinstance(payload, dict) else None
        if not isinstance(name, str) or not name.strip():
            return JSONResponse(
                {"error": "invalid_request", "error_description": 'send JSON {"name": "<repository name>"}'},
                status_code=400,
            )
        repos: dict[str, list[str]] = request.app.state.repos
        repos.setdefault(request.user.identity, []).append(name.strip())
        return JSONResponse({"name": name.strip(), "owner": request.user.identity}, status_code=201)


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


def create_app(auth: PATAuth, *, extra_routes: Sequence[BaseRoute] = (), close_auth: bool = True) -> Starlette:
    """The example API on ``auth``.

    ``extra_routes`` are mounted next to the API: the place for the token
    management REST routes and the settings page. With ``close_auth`` the
    app's lifespan closes ``auth`` on shutdown.
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if close_auth:
            await auth.aclose()

    routes: list[BaseRoute] = [
        Route("/", home),
        Route("/health", health),
        Route("/user", current_user),
        Route("/repos", Repos),
        WebSocketRoute("/ws/events", events),
        # Token management (REST API, settings page) is mounted here via extra_routes.
        *extra_routes,
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(PATMiddleware, auth=auth)],
        lifespan=lifespan,
    )
    app.state.auth = auth
    app.state.repos = {}
    return app


def _auth_from_env() -> PATAuth:
    return PATAuth.from_url(
        os.environ.get("PAT_STORE_URL", "sqlite:///pat_demo.db"),
        cache_url=os.environ.get("PAT_CACHE_URL"),
        cache_prefix=os.environ.get("PAT_CACHE_PREFIX", "pat:"),
    )


#: For ``uvicorn examples.starlette_app:app``; the store is opened on first use.
app = create_app(_auth_from_env())
