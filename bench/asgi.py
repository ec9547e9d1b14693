"""What PATMiddleware costs per request, against a bare Starlette app.

Run: ``python bench/asgi.py``. Three apps, timed interleaved in one run (each
round times every app once; the median of the rounds is printed):

* the bare Starlette app (one route returning a small ``Response``);
* the same app behind ``PATMiddleware`` with a valid, cached token (and again
  without the expiry response header, which costs a ``send`` wrapper);
* the same app behind Starlette's ``AuthenticationMiddleware`` with a trivial
  backend (a dict lookup of the bearer value), for reference;
* fine-grained tokens: a ``/repos/{repo:path}`` route behind ``PATMiddleware``
  and ``requires_scopes("repo:read")``, then with one more scope to check
  (``"repo:write"``, held as such; ``"admin:org"``, held through ``admin:*``),
  then with a resource check instead (``resource="repo"``, the token limited
  to ``acme/web`` and ``tools/*``): an exact resource, and one under the
  prefix wildcard. A resource check should cost no more than one more scope
  check of the same kind.

The ASGI apps are called directly (hand-built scope, receive and send): no
network, no server, so the figures are the middleware's own cost. Time is the
CPU time of the benchmarking thread (``time.thread_time``), so other processes
on a busy machine disturb the figures less.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from report import print_ratios, request_args
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message

from pat_middleware import MemoryStore, PATAuth
from pat_middleware.starlette import PATMiddleware, requires_scopes


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


def make_app(middleware: list[Middleware]) -> Starlette:
    return Starlette(routes=[Route("/repos", endpoint)], middleware=middleware)


def repo_app(auth: PATAuth, *scopes: str, resource: str | None = None) -> Starlette:
    """``/repos/{repo:path}`` behind the middleware and ``requires_scopes(*scopes, resource=...)``."""
    checked = requires_scopes(*scopes, resource=resource)(endpoint)
    return Starlette(routes=[Route("/repos/{repo:path}", checked)], middleware=[Middleware(PATMiddleware, auth=auth)])


def scope_for(token: str, path: str = "/repos") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"api.example.com"),
            (b"user-agent", b"bench/1.0"),
            (b"accept", b"*/*"),
            (b"authorization", f"Bearer {token}".encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def per_request_us(app: ASGIApp, token: str, n: int, path: str = "/repos") -> float:
    request: Message = {"type": "http.request", "body": b"", "more_body": False}
    statuses: list[int] = []

    async def receive() -> Message:
        return request

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    start = time.thread_time()
    for _ in range(n):
        await app(scope_for(token, path), receive, send)
    elapsed = time.thread_time() - start
    if set(statuses) != {200}:
        raise SystemExit(f"unexpected statuses {set(statuses)}")
    return elapsed / n * 1e6


async def run(rounds: int, n: int) -> dict[str, list[float]]:
    auth = PATAuth(MemoryStore())
    new = await auth.async_manager.create("bench", "bench", ["repo:read"], expires_in=timedelta(days=1))
    token = new.token
    fine = await auth.async_manager.create(
        "bench",
        "fine",
        ["repo:read", "repo:write", "admin:*"],
        expires_in=timedelta(days=1),
        resources=["acme/web", "tools/*"],
    )
    apps: dict[str, tuple[ASGIApp, str, str]] = {
        "bare Starlette": (make_app([]), token, "/repos"),
        "PATMiddleware (cached token)": (make_app([Middleware(PATMiddleware, auth=auth)]), token, "/repos"),
        "  same, expiry_header=None": (
            make_app([Middleware(PATMiddleware, auth=auth, expiry_header=None)]),
            token,
            "/repos",
        ),
        "AuthenticationMiddleware (dict)": (
            make_app([Middleware(AuthenticationMiddleware, backend=DictBackend({token: "bench"}))]),
            token,
            "/repos",
        ),
        "/repos/{repo}: requires_scopes(1 scope)": (repo_app(auth, "repo:read"), fine.token, "/repos/acme/web"),
        "  + one more scope (exact)": (repo_app(auth, "repo:read", "repo:write"), fine.token, "/repos/acme/web"),
        "  + one more scope (wildcard)": (repo_app(auth, "repo:read", "admin:org"), fine.token, "/repos/acme/web"),
        "  + resource (exact)": (repo_app(auth, "repo:read", resource="repo"), fine.token, "/repos/acme/web"),
        "  + resource (wildcard)": (repo_app(auth, "repo:read", resource="repo"), fine.token, "/repos/tools/lint"),
    }
    samples: dict[str, list[float]] = {name: [] for name in apps}
    for app, tok, path in apps.values():  # warm up: build middleware stacks, fill the cache
        await per_request_us(app, tok, 200, path)
    for _ in range(rounds):
        for name, (app, tok, path) in apps.items():
            samples[name].append(await per_request_us(app, tok, n, path))
    await auth.aclose()
    return samples


def main() -> None:
    args = request_args(__doc__)
    samples = asyncio.run(run(args.rounds, args.requests))
    print_ratios(samples, "bare Starlette", label="app", unit="µs/request", ratio="x bare")


if __name__ == "__main__":
    main()
