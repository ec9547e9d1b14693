"""Instrumented apps for the cold-start burst and flood tests (tests/test_reliability_load.py).

The same small API on both edges, with a :class:`PATAuth` whose hasher and
store count what the cold path costs:

* :class:`CountingHasher` wraps the real :class:`Argon2Hasher` and counts
  ``verify`` calls (matched and mismatched) and the most running at once;
* :class:`CountingStore` wraps the store and counts ``get`` calls;
* the protected route ``GET /whoami`` (any valid token) is wrapped in a
  counter of requests in flight, whose peak shows the burst really overlapped;
* ``GET /health`` (public); ``GET /counters`` (public) reports the counters and the worker's pid;
  ``POST /counters/reset`` zeroes them.

Servers run them from the environment (``PAT_STORE_URL``, a SQLite file
shared with the test process; ``PAT_HASH_WORKERS``, default 2)::

    uvicorn --factory tests.burst_app:asgi_app
    gunicorn -k gthread --threads 32 'tests.burst_app:wsgi_app()'
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from flask import Flask, request
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pat_middleware import PATAuth, store_from_url
from pat_middleware.core.hashing import Argon2Hasher, Hasher
from pat_middleware.core.models import TokenRecord
from pat_middleware.flask import PAT, current_principal, scopes_required
from pat_middleware.starlette import PATMiddleware, requires_scopes
from pat_middleware.stores.base import Store

__all__ = ["Counters", "CountingHasher", "CountingStore", "asgi_app", "build_auth", "starlette_app", "wsgi_app"]


class CountingHasher:
    """A hasher that counts ``verify`` calls and the most running at once."""

    def __init__(self, inner: Hasher | None = None) -> None:
        self.inner = inner or Argon2Hasher()
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.verifications = self.matched = self.mismatched = 0
            self.running = self.max_running = 0

    def hash(self, secret: str) -> str:
        return self.inner.hash(secret)

    def verify(self, stored: str, secret: str) -> bool:
        with self._lock:
            self.verifications += 1
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            ok = self.inner.verify(stored, secret)
        finally:
            with self._lock:
                self.running -= 1
        with self._lock:
            if ok:
                self.matched += 1
            else:
                self.mismatched += 1
        return ok

    def needs_rehash(self, stored: str) -> bool:
        return self.inner.needs_rehash(stored)


class CountingStore:
    """A store whose ``get`` calls are counted; everything else passes through.

    It has no ``async_store``, so async code calls it in PATAuth's I/O threads.
    """

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self.gets = 0

    def get(self, token_id: str) -> TokenRecord | None:
        with self._lock:
            self.gets += 1
        return self.inner.get(token_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Counters:
    """The counters of one app: argon2 runs, store reads, requests in flight."""

    def __init__(self, hasher: CountingHasher, store: CountingStore) -> None:
        self.hasher, self.store = hasher, store
        self._lock = threading.Lock()
        self.in_flight = self.peak_in_flight = 0

    def enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def reset(self) -> None:
        self.hasher.reset()
        with self.store._lock:
            self.store.gets = 0
        with self._lock:
            self.peak_in_flight = self.in_flight

    def snapshot(self) -> dict[str, int]:
        h = self.hasher
        return {
            "pid": os.getpid(),
            "argon2_runs": h.verifications,
            "argon2_matched": h.matched,
            "argon2_mismatched": h.mismatched,
            "argon2_max_running": h.max_running,
            "store_gets": self.store.gets,
            "peak_in_flight": self.peak_in_flight,
        }


def build_auth(store_url: str | None = None, **options: Any) -> tuple[PATAuth, Counters]:
    """A PATAuth on a counted store with a counting argon2 hasher (``options`` pass on)."""
    url = store_url or os.environ["PAT_STORE_URL"]
    options.setdefault("hash_workers", int(os.environ.get("PAT_HASH_WORKERS", "2")))
    hasher, store = CountingHasher(), CountingStore(store_from_url(url))
    auth = PATAuth(store, hasher=hasher, **options)  # type: ignore[arg-type]
    return auth, Counters(hasher, store)


def starlette_app(auth: PATAuth, counters: Counters, close_auth: bool = True) -> Callable[..., Any]:
    """The ASGI edge: PATMiddleware in front of /whoami, /counters, /counters/reset."""

    @requires_scopes()
    async def whoami(request: Request) -> JSONResponse:
        return JSONResponse({"user": request.user.identity})

    async def counters_route(request: Request) -> JSONResponse:
        if request.method == "POST":
            counters.reset()
        return JSONResponse(counters.snapshot())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if close_auth:
            await auth.aclose()

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    inner = Starlette(
        routes=[
            Route("/health", health),
            Route("/whoami", whoami),
            Route("/counters", counters_route, methods=["GET", "POST"]),
        ],
        middleware=[Middleware(PATMiddleware, auth=auth)],
        lifespan=lifespan,
    )

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/whoami":
            await inner(scope, receive, send)
            return
        counters.enter()
        try:
            await inner(scope, receive, send)
        finally:
            counters.leave()

    return app


def asgi_app() -> Callable[..., Any]:
    """For ``uvicorn --factory tests.burst_app:asgi_app``."""
    return starlette_app(*build_auth())


def wsgi_app() -> Callable[..., Any]:
    """For ``gunicorn 'tests.burst_app:wsgi_app()'``: the same API on Flask."""
    auth, counters = build_auth()
    app = Flask(__name__)
    PAT(app, auth=auth)

    @app.get("/whoami")
    @scopes_required()
    def whoami() -> dict[str, Any]:
        return {"user": current_principal.user_id}

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok"}

    @app.route("/counters", methods=["GET", "POST"])
    def counters_route() -> dict[str, Any]:
        if request.method == "POST":
            counters.reset()
        return counters.snapshot()

    wsgi = app.wsgi_app  # PAT's middleware in front of Flask

    def counted(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") != "/whoami":
            return wsgi(environ, start_response)
        counters.enter()
        try:
            result = wsgi(environ, start_response)
            try:
                return list(result)  # the body is produced inside the count
            finally:
                if hasattr(result, "close"):
                    result.close()
        finally:
            counters.leave()

    app.wsgi_app = counted  # type: ignore[method-assign]
    return app
