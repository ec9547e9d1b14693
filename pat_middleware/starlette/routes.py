"""Starlette / FastAPI mounts of the token management API and the settings page.

Thin: each endpoint turns the Starlette request into an
:class:`~pat_middleware.management.api.ApiRequest`, runs the neutral flow
(:meth:`TokenAPI.handle <pat_middleware.management.api.TokenAPI.handle>`,
:meth:`SettingsPage.handle <pat_middleware.management.settings_page.SettingsPage.handle>`)
with the auth's async driver and sends the answer::

    app = Starlette(
        routes=[
            token_routes(auth, current_user=lambda request: request.session.get("user")),
            settings_route(auth, current_user=..., available_scopes=["repo:read", "repo:write"]),
        ],
        middleware=[Middleware(SessionMiddleware, secret_key=...), Middleware(PATMiddleware, auth=auth)],
    )

``current_user(request)`` is the host app's login (it may be async). A
request authenticated by a token (``PATMiddleware`` sets ``scope["pat"]``)
acts for the token's user only if the token has ``manage_scope``. The page
keeps its CSRF token in ``request.session`` (``SessionMiddleware``).

:func:`admin_routes` mounts the administration API
(:mod:`pat_middleware.management.admin_api`) for the host's administrators:
``admin_routes(auth, is_admin=lambda request: ..., admin_scope="admin")``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from pat_middleware.auth import PATAuth
from pat_middleware.core.flow import Flow
from pat_middleware.management.admin_api import AdminAPI
from pat_middleware.management.api import (
    MANAGE_SCOPE,
    MAX_BODY,
    ApiError,
    ApiRequest,
    ApiResponse,
    TokenAPI,
    error_reply,
    unreadable_body,
)
from pat_middleware.management.settings_page import SettingsPage, session_csrf_token

__all__ = ["CurrentUser", "IsAdmin", "admin_routes", "health_route", "settings_route", "token_routes"]

#: The host app's "who is logged in": ``request -> user id or None`` (sync or async).
CurrentUser = Callable[[Request], "str | Awaitable[str | None] | None"]
#: The host app's "is this an administrator": ``request -> bool`` (sync or async).
IsAdmin = Callable[[Request], "bool | Awaitable[bool]"]


async def _body(request: Request) -> bytes:
    """The body, read no further than one byte past the API's limit (the API answers 413);
    :func:`~pat_middleware.management.api.unreadable_body` when the client went away mid-body."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_BODY:
                break
    except ClientDisconnect:
        raise unreadable_body() from None
    return b"".join(chunks)


def _has_body(request: Request) -> bool:
    """A body is read only where the request declares one (RFC 9112 §6.3: no
    Content-Length and no Transfer-Encoding means none)."""
    headers = request.headers
    return request.method not in ("GET", "HEAD") and ("content-length" in headers or "transfer-encoding" in headers)


async def _session_user(request: Request, current_user: CurrentUser | IsAdmin) -> object:
    """What ``current_user`` (or ``is_admin``) returned, awaited: the API checks it."""
    user = current_user(request)
    if inspect.isawaitable(user):
        user = await user
    return user


async def _neutral(
    request: Request,
    current_user: CurrentUser,
    path: str,
    root: str,
    csrf_token: str | None = None,
    admin: bool = False,
) -> ApiRequest:
    return ApiRequest(
        method=request.method,
        path=path,
        root=root,
        query=tuple(request.query_params.multi_items()),
        content_type=request.headers.get("content-type"),
        body=await _body(request) if _has_body(request) else b"",
        principal=request.scope.get("pat"),
        session_user=await _session_user(request, current_user),
        csrf_token=csrf_token,
        admin=admin,
    )


async def _answer(auth: PATAuth, flow: Flow[ApiResponse]) -> Response:
    return _response(await auth.arun(flow))


def _response(answer: ApiResponse) -> Response:
    return Response(answer.body, answer.status, headers=dict(answer.headers))


class _Mount(Mount):
    """A ``Mount`` whose pattern matches every path below it, newlines included, so the
    API (not the app's text 404) answers all of them."""

    def __init__(self, path: str, app: ASGIApp, name: str) -> None:
        super().__init__(path, app=app, name=name)
        self.path_regex = re.compile(self.path_regex.pattern, re.DOTALL)


def _api_mount(
    auth: PATAuth,
    path: str,
    name: str,
    answer: Callable[[Request, str, str], Awaitable[ApiResponse]],
) -> Mount:
    """A ``Mount`` at ``path`` handing every HTTP request below it to ``answer(request, sub_path, root)``."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await WebSocketClose()(scope, receive, send)
            return
        root: str = scope.get("root_path", "")
        full: str = scope["path"]
        sub_path = full[len(root) :] if full.startswith(root) else full
        try:
            reply = await answer(Request(scope, receive), sub_path or "/", root)
        except ApiError as exc:
            reply = error_reply(exc, auth.realm)
        await _response(reply)(scope, receive, send)

    return _Mount(path, app, name)


def token_routes(
    auth: PATAuth,
    current_user: CurrentUser,
    *,
    path: str = "/api",
    manage_scope: str = MANAGE_SCOPE,
    name: str = "pat_api",
) -> Mount:
    """A ``Mount`` at ``path`` serving ``/tokens...``, ``/log`` and ``/openapi.json``
    (see :mod:`pat_middleware.management.api`)."""
    api = TokenAPI.for_auth(auth, manage_scope=manage_scope)

    async def answer(request: Request, sub_path: str, root: str) -> ApiResponse:
        return await auth.arun(api.handle(await _neutral(request, current_user, sub_path, root)))

    return _api_mount(auth, path, name, answer)


def _nobody(request: Request) -> None:
    return None


def admin_routes(
    auth: PATAuth,
    *,
    is_admin: IsAdmin | None = None,
    admin_scope: str | None = None,
    current_user: CurrentUser | None = None,
    path: str = "/admin",
    name: str = "pat_admin",
) -> Mount:
    """A ``Mount`` at ``path`` serving the administration API (every user's tokens, the
    inactivity sweep, the security log; see :mod:`pat_middleware.management.admin_api`).

    A request is admitted when its token (verified by ``PATMiddleware``) holds
    ``admin_scope``, or when ``is_admin(request)`` (sync or async) says so; give
    one or both (``ValueError`` otherwise). ``current_user(request)`` names the
    administrator in the security log (``admin:<id>``) when ``is_admin`` admitted them.
    """
    AdminAPI.check_guard(is_admin, admin_scope)
    api = AdminAPI.for_auth(auth, admin_scope=admin_scope)
    whoami: CurrentUser = current_user or _nobody

    async def answer(request: Request, sub_path: str, root: str) -> ApiResponse:
        admitted = False
        if not api.admits_token(request.scope.get("pat")) and is_admin is not None:
            admitted = await _session_user(request, is_admin) is True
        neutral = await _neutral(request, whoami, sub_path, root, admin=admitted)
        return await auth.arun(api.handle(neutral))

    return _api_mount(auth, path, name, answer)


def settings_route(
    auth: PATAuth,
    current_user: CurrentUser,
    *,
    path: str = "/settings/tokens",
    available_scopes: Sequence[str] | Mapping[str, str] | None = None,
    login_url: str | None = None,
    manage_scope: str = MANAGE_SCOPE,
    name: str = "pat_settings",
    **options: Any,
) -> Route:
    """The settings page at ``path`` (GET shows it, POST handles its forms).

    Needs ``SessionMiddleware`` for its CSRF token; without a session the
    page shows but refuses every form.

    ``options`` go to :class:`~pat_middleware.management.settings_page.SettingsPage`: ``title``,
    ``template`` and ``loader`` (the host's Jinja2 templates, to theme or replace the page).
    """
    page = SettingsPage.for_auth(
        auth, manage_scope=manage_scope, available_scopes=available_scopes, login_url=login_url, **options
    )

    async def endpoint(request: Request) -> Response:
        session = request.scope.get("session")
        csrf = session_csrf_token(session) if isinstance(session, dict) else None
        try:
            neutral = await _neutral(request, current_user, "/", request.url.path, csrf)
        except ApiError as exc:
            return _response(error_reply(exc, auth.realm))
        return await _answer(auth, page.handle(neutral))

    return Route(path, endpoint, methods=["GET", "POST"], name=name)


def health_route(auth: PATAuth, path: str = "/health") -> Mount:
    """Liveness and readiness at ``path``: ``GET {path}/live`` answers 200 while the
    process serves; ``GET {path}/ready`` answers :meth:`PATAuth.ahealth`'s report,
    200 when the token store is reachable and 503 while it is not. With
    ``PATMiddleware(required=True)``, add ``path`` to its ``exempt`` paths."""

    async def live(request: Request) -> Response:
        return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})

    async def ready(request: Request) -> Response:
        health = await auth.ahealth()
        return JSONResponse(health.to_dict(), health.status_code, headers={"Cache-Control": "no-store"})

    return Mount(path, routes=[Route("/live", live), Route("/ready", ready)])
