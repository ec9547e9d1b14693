"""Flask mounts of the token management API and the settings page.

Thin: each view turns the Flask request into an
:class:`~pat_middleware.management.api.ApiRequest`, runs the neutral flow with the
auth's sync driver and returns the answer::

    pat = PAT(app)
    app.register_blueprint(token_blueprint(current_user=lambda: session.get("user")))
    app.register_blueprint(settings_blueprint(current_user=lambda: session.get("user"),
                                              available_scopes=["repo:read", "repo:write"]))

Without ``auth`` the blueprints use the app's ``PAT`` extension. ``current_user()``
is the host app's login (called inside the request). A request authenticated
by a token (``environ["pat.principal"]``) acts for the token's user only if
the token has ``manage_scope``. The page keeps its CSRF token in Flask's
``session`` (the app needs a ``secret_key``).

:func:`admin_blueprint` mounts the administration API
(:mod:`pat_middleware.management.admin_api`) for the host's administrators:
``admin_blueprint(is_admin=lambda: ..., admin_scope="admin")``.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flask import Blueprint, Response, current_app, request, session
from flask.blueprints import BlueprintSetupState
from werkzeug.routing import PathConverter

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
from pat_middleware.wsgi import ENVIRON_KEY

__all__ = ["CurrentUser", "IsAdmin", "admin_blueprint", "health_blueprint", "settings_blueprint", "token_blueprint"]

#: The host app's "who is logged in", called in the request context: ``() -> user id or None``.
CurrentUser = Callable[[], "str | None"]
#: The host app's "is this an administrator", called in the request context: ``() -> bool``.
IsAdmin = Callable[[], bool]
#: Every RFC 9110 method (and PATCH), so each gets the API's JSON answer (405 with Allow), not werkzeug's HTML.
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"]


class _Response(Response):
    default_mimetype = None  # a 204 gets no Content-Type


class _AnyPath(PathConverter):
    """Like ``path`` but matches every character (newlines and a leading slash too):
    every path below the mount reaches the API, which answers in JSON."""

    regex = r"[\s\S]+?"
    part_isolating = False  # werkzeug infers it from a "/" in the regex; this one has none


def _add_converter(state: BlueprintSetupState) -> None:
    state.app.url_map.converters.setdefault("pat_any_path", _AnyPath)


def _bound(auth: PATAuth | None, build: Callable[[PATAuth], Any]) -> Callable[[], tuple[PATAuth, Any]]:
    """``auth`` (else the app's ``PAT`` extension's) and the handler built for it, built once per auth."""
    built: weakref.WeakKeyDictionary[PATAuth, Any] = weakref.WeakKeyDictionary()

    def resolve() -> tuple[PATAuth, Any]:
        if auth is not None:
            target = auth
        else:
            from pat_middleware.flask.extension import get_auth

            target = get_auth()
        handler = built.get(target)
        if handler is None:
            handler = built[target] = build(target)
        return target, handler

    return resolve


def _neutral(
    current_user: CurrentUser, path: str, root: str, csrf_token: str | None = None, admin: bool = False
) -> ApiRequest:
    return ApiRequest(
        method=request.method,
        path=path,
        root=root,
        query=tuple(request.args.items(multi=True)),
        content_type=request.headers.get("Content-Type"),
        body=_body() if request.method not in ("GET", "HEAD") else b"",
        principal=request.environ.get(ENVIRON_KEY),
        session_user=current_user(),  # checked by acting_user
        csrf_token=csrf_token,
        admin=admin,
    )


def _body() -> bytes:
    """The body, read no further than one byte past the API's limit (the API answers 413)."""
    try:
        return request.stream.read(MAX_BODY + 1)
    except Exception as exc:  # the client went away or broke the framing (werkzeug's ValueError, gunicorn's
        raise unreadable_body() from exc  # InvalidChunkSize...): a 400, never a 500


def _answer(auth: PATAuth, flow: Flow[ApiResponse]) -> Response:
    return _response(auth.run(flow))


def _response(answer: ApiResponse) -> Response:
    return _Response(answer.body, status=answer.status, headers=answer.headers)


def _handle(
    auth: PATAuth, make_request: Callable[[], ApiRequest], handle: Callable[[ApiRequest], Flow[ApiResponse]]
) -> Response:
    """Build the neutral request (a 400 if its body cannot be read) and answer it."""
    try:
        neutral = make_request()
    except ApiError as exc:
        return _response(error_reply(exc, auth.realm))
    return _answer(auth, handle(neutral))


def _api_blueprint(name: str, url_prefix: str, answer: Callable[[str, str], Response]) -> Blueprint:
    """A blueprint at ``url_prefix`` handing every request below it to ``answer(sub_path, root)``."""
    blueprint = Blueprint(name, __name__, url_prefix=url_prefix)
    blueprint.record_once(_add_converter)

    def view(rest: str = "") -> Response:
        sub_path = "/" + rest
        root = request.script_root + request.path[: len(request.path) - len(sub_path)]
        return answer(sub_path, root)

    for rule in ("/", "/<pat_any_path:rest>"):
        # merge_slashes off: "/api//tokens" is the API's JSON 404, as on Starlette, not werkzeug's HTML redirect
        blueprint.add_url_rule(
            rule, "api", view, methods=_METHODS, provide_automatic_options=False, merge_slashes=False
        )
    return blueprint


def token_blueprint(
    auth: PATAuth | None = None,
    current_user: CurrentUser = lambda: None,
    *,
    url_prefix: str = "/api",
    manage_scope: str = MANAGE_SCOPE,
    name: str = "pat_api",
) -> Blueprint:
    """A blueprint at ``url_prefix`` serving ``/tokens...``, ``/log`` and ``/openapi.json``
    (see :mod:`pat_middleware.management.api`)."""
    resolve = _bound(auth, lambda a: TokenAPI.for_auth(a, manage_scope=manage_scope))

    def answer(sub_path: str, root: str) -> Response:
        target, api = resolve()
        return _handle(target, lambda: _neutral(current_user, sub_path, root), api.handle)

    return _api_blueprint(name, url_prefix, answer)


def admin_blueprint(
    auth: PATAuth | None = None,
    *,
    is_admin: IsAdmin | None = None,
    admin_scope: str | None = None,
    current_user: CurrentUser | None = None,
    url_prefix: str = "/admin",
    name: str = "pat_admin",
) -> Blueprint:
    """A blueprint at ``url_prefix`` serving the administration API (every user's tokens,
    the inactivity sweep, the security log; see :mod:`pat_middleware.management.admin_api`).

    A request is admitted when its token (verified by the WSGI middleware) holds
    ``admin_scope``, or when ``is_admin()`` (called in the request context) returns
    ``True``; give one or both (``ValueError`` otherwise). ``current_user()`` names the
    administrator in the security log (``admin:<id>``) when ``is_admin`` admitted them.
    Without ``auth``, the app's ``PAT`` extension's.
    """
    AdminAPI.check_guard(is_admin, admin_scope)
    resolve = _bound(auth, lambda a: AdminAPI.for_auth(a, admin_scope=admin_scope))
    whoami: CurrentUser = current_user or (lambda: None)

    def answer(sub_path: str, root: str) -> Response:
        target, api = resolve()
        admitted = False
        if not api.admits_token(request.environ.get(ENVIRON_KEY)) and is_admin is not None:
            admitted = is_admin() is True
        return _handle(target, lambda: _neutral(whoami, sub_path, root, admin=admitted), api.handle)

    return _api_blueprint(name, url_prefix, answer)


def settings_blueprint(
    auth: PATAuth | None = None,
    current_user: CurrentUser = lambda: None,
    *,
    path: str = "/settings/tokens",
    available_scopes: Sequence[str] | Mapping[str, str] | None = None,
    login_url: str | None = None,
    manage_scope: str = MANAGE_SCOPE,
    name: str = "pat_settings",
    **options: Any,
) -> Blueprint:
    """The settings page at ``path`` (GET shows it, POST handles its forms).

    Its CSRF token lives in Flask's session; without a ``secret_key`` the page
    shows but refuses every form.

    ``options`` go to :class:`~pat_middleware.management.settings_page.SettingsPage`: ``title``,
    ``template`` and ``loader`` (the host's Jinja2 templates, to theme or replace the page).
    """
    resolve = _bound(
        auth,
        lambda a: SettingsPage.for_auth(
            a, manage_scope=manage_scope, available_scopes=available_scopes, login_url=login_url, **options
        ),
    )
    blueprint = Blueprint(name, __name__)

    def view() -> Response:
        target, page = resolve()
        has_session = not current_app.session_interface.is_null_session(session)
        csrf = session_csrf_token(session) if has_session else None
        path = request.script_root + request.path
        return _handle(target, lambda: _neutral(current_user, "/", path, csrf), page.handle)

    blueprint.add_url_rule(path, "page", view, methods=["GET", "POST"])
    return blueprint


def health_blueprint(
    auth: PATAuth | None = None, *, url_prefix: str = "/health", name: str = "pat_health"
) -> Blueprint:
    """Liveness and readiness under ``url_prefix``: ``GET /live`` answers 200 while the
    process serves; ``GET /ready`` answers :meth:`PATAuth.health`'s report, 200 when
    the token store is reachable and 503 while it is not. ``auth``: by default the
    app's ``PAT`` extension's. With ``PAT_REQUIRED``, add the prefix to ``PAT_EXEMPT``."""
    blueprint = Blueprint(name, __name__, url_prefix=url_prefix)

    @blueprint.get("/live")
    def live() -> Response:
        return _json({"status": "ok"}, 200)

    @blueprint.get("/ready")
    def ready() -> Response:
        if auth is not None:
            target = auth
        else:
            from pat_middleware.flask.extension import get_auth

            target = get_auth()
        health = target.health()
        return _json(health.to_dict(), health.status_code)

    return blueprint


def _json(data: Mapping[str, Any], status: int) -> Response:
    return Response(json.dumps(data), status, {"Content-Type": "application/json", "Cache-Control": "no-store"})
