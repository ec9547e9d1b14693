"""Django mounts of the token management API and the settings page (see ``urls.py``).

Thin, as the Flask and Starlette mounts: each view turns the Django request into
an :class:`~pat_middleware.management.api.ApiRequest`, runs the neutral flow with
the sync driver and returns the answer. The acting user is the token's (with the
manage scope) or Django's logged-in user (``request.user.pk``, as a string).

CSRF is Django's: the views are ``csrf_exempt`` only so that they can run Django's
own check (``CsrfViewMiddleware.process_view``) themselves, on the page's form
field, and only where a session is what authenticates: a request carrying a
token needs none. A failed check gets the page's "form expired" answer (403), or
the API's JSON 403 ``csrf``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware, get_token
from django.shortcuts import resolve_url
from django.views.decorators.csrf import csrf_exempt

from pat_middleware.auth import PATAuth
from pat_middleware.django.conf import get_auth, get_settings
from pat_middleware.management.api import (
    MAX_BODY,
    ApiError,
    ApiRequest,
    ApiResponse,
    TokenAPI,
    error_reply,
    unreadable_body,
)
from pat_middleware.management.settings_page import SettingsPage

__all__ = ["settings_page", "token_api"]

_SAFE = ("GET", "HEAD", "OPTIONS", "TRACE")


def _built(build: Callable[[PATAuth], Any]) -> Callable[[], tuple[PATAuth, Any]]:
    """The configured auth and the handler built for it (once per auth)."""
    cache: weakref.WeakKeyDictionary[PATAuth, Any] = weakref.WeakKeyDictionary()

    def resolve() -> tuple[PATAuth, Any]:
        auth = get_auth()
        handler = cache.get(auth)
        if handler is None:
            handler = cache[auth] = build(auth)
        return auth, handler

    return resolve


def _api(auth: PATAuth) -> TokenAPI:
    return TokenAPI.for_auth(auth, manage_scope=get_settings().manage_scope)


def _page(auth: PATAuth) -> SettingsPage:
    conf = get_settings()
    login_url = conf.login_url if conf.login_url is not None else resolve_url(settings.LOGIN_URL)
    return SettingsPage.for_auth(
        auth, manage_scope=conf.manage_scope, available_scopes=conf.available_scopes, login_url=login_url or None
    )


_api_for = _built(_api)
_page_for = _built(_page)


def _body(request: HttpRequest) -> bytes:
    """The body, read no further than one byte past the API's limit (the API answers 413)."""
    if request.method in ("GET", "HEAD"):
        return b""
    try:
        return request.read(MAX_BODY + 1)
    except Exception as exc:  # the client went away or broke the framing: a 400, never a 500
        raise unreadable_body() from exc


def _session_user(request: HttpRequest) -> str | None:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    return str(user.pk)


def _csrf_passes(request: HttpRequest, sent: str | None = None) -> bool:
    """Django's CSRF check of an unsafe request; ``sent`` is a form's token (read here,
    since the views read the body themselves), used when no ``X-CSRFToken`` header came."""
    if sent and settings.CSRF_HEADER_NAME not in request.META:
        request.META[settings.CSRF_HEADER_NAME] = sent
    return CsrfViewMiddleware(lambda r: HttpResponse()).process_view(request, _checked, (), {}) is None


def _form_token(request: HttpRequest) -> str:
    """Django's CSRF token for the page's forms (the middleware sets its cookie)."""
    return get_token(request)


def _checked(request: HttpRequest) -> HttpResponse:  # the "view" the CSRF check is made for
    return HttpResponse()


def _neutral(request: HttpRequest, path: str, root: str, body: bytes, csrf_token: str | None = None) -> ApiRequest:
    principal = getattr(request, "pat", None)
    return ApiRequest(
        method=request.method or "GET",
        path=path,
        root=root,
        query=tuple((key, value) for key, values in request.GET.lists() for value in values),
        content_type=request.META.get("CONTENT_TYPE"),
        body=body,
        principal=principal,
        session_user=None if principal is not None else _session_user(request),
        csrf_token=csrf_token,
    )


def _response(answer: ApiResponse) -> HttpResponse:
    response = HttpResponse(answer.body, status=answer.status)
    if not any(name.lower() == "content-type" for name, _ in answer.headers):
        del response["Content-Type"]  # a 204 gets none
    for name, value in answer.headers:
        response[name] = value
    return response


@csrf_exempt
def token_api(request: HttpRequest, rest: str = "/") -> HttpResponse:
    """The management API below its mount: ``/tokens...`` and ``/openapi.json``."""
    auth, api = _api_for()
    root = request.path[: len(request.path) - len(rest)]
    try:
        body = _body(request)
        if request.method not in _SAFE and getattr(request, "pat", None) is None and not _csrf_passes(request):
            raise ApiError(403, "csrf", "CSRF check failed: send the X-CSRFToken header with the CSRF cookie's token")
    except ApiError as exc:
        return _response(error_reply(exc, auth.realm))
    return _response(auth.run(api.handle(_neutral(request, rest, root, body))))


@csrf_exempt
def settings_page(request: HttpRequest) -> HttpResponse:
    """The settings page: GET shows it, POST handles its forms (Django's CSRF check)."""
    auth, page = _page_for()
    try:
        body = _body(request)
    except ApiError as exc:
        return _response(error_reply(exc, auth.realm))
    if request.method == "POST":
        sent = dict(parse_qsl(body.decode("utf-8", "replace"))).get("csrf_token") if len(body) <= MAX_BODY else None
        expected = sent if _csrf_passes(request, sent) else None
    else:
        expected = _form_token(request)
    return _response(auth.run(page.handle(_neutral(request, "/", request.path, body, expected))))
