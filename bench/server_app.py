"""The ASGI app that ``bench/server.py`` runs under uvicorn: one endpoint, four mounts.

``/bare``       the endpoint alone;
``/floor``      behind a hand-written pure ASGI middleware doing one dict lookup
                of the bearer value (the least any authentication can cost);
``/starlette``  behind Starlette's ``AuthenticationMiddleware`` with a dict backend;
``/pat``        behind ``PATMiddleware`` (expiry header on, the default) on the
                token store at ``PAT_BENCH_STORE`` (a SQLite file);
``/pat-noexp``  the same with ``expiry_header=None``.

Each mount is its own Starlette app; a dispatcher picks one by the path's first
segment (a dict lookup), so routing costs every mount the same. ``/_stats``
answers the process's CPU time and the number of requests served.
"""

from __future__ import annotations

import os
from typing import Any

from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from pat_middleware import PATAuth
from pat_middleware.starlette import PATMiddleware

TOKEN = os.environ["PAT_BENCH_TOKEN"]
auth = PATAuth.from_url(os.environ["PAT_BENCH_STORE"])


async def endpoint(request: Request) -> Response:
    return Response(b"ok", media_type="text/plain")


class DictBackend(AuthenticationBackend):
    """Starlette's documented pattern at its cheapest: one dict lookup."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        header = conn.headers.get("authorization")
        if header is None:
            return None
        user = self.users.get(header.partition(" ")[2])
        return None if user is None else (AuthCredentials(["repo:read"]), SimpleUser(user))


class Floor:
    """A pure ASGI middleware doing the least: find the header, one dict lookup."""

    def __init__(self, app: ASGIApp, users: dict[bytes, str]) -> None:
        self.app = app
        self.users = users

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scope["user"] = self.users.get(value[7:])
        await self.app(scope, receive, send)


def _app(path: str, middleware: list[Middleware]) -> Starlette:
    return Starlette(routes=[Route(path, endpoint)], middleware=middleware)


MOUNTS: dict[str, ASGIApp] = {
    "bare": _app("/bare", []),
    "floor": _app("/floor", [Middleware(Floor, users={TOKEN.encode(): "bench"})]),
    "starlette": _app("/starlette", [Middleware(AuthenticationMiddleware, backend=DictBackend({TOKEN: "bench"}))]),
    "pat": _app("/pat", [Middleware(PATMiddleware, auth=auth)]),
    "pat-noexp": _app("/pat-noexp", [Middleware(PATMiddleware, auth=auth, expiry_header=None)]),
}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Dispatch on the first path segment."""
    if scope["type"] == "lifespan":
        message: Any = await receive()
        while message["type"] != "lifespan.shutdown":
            await send({"type": message["type"] + ".complete"})
            message = await receive()
        await auth.aclose()
        await send({"type": "lifespan.shutdown.complete"})
        return
    await MOUNTS[scope["path"].split("/", 2)[1]](scope, receive, send)
