"""A small Flask API protected by personal access tokens.

Run it (the tokens live in ``instance/pat_tokens.db`` unless ``PAT_STORE_URL`` says otherwise)::

    flask --app examples.flask_app pat create alice laptop -s repo:read -s repo:write
    flask --app examples.flask_app run
    curl -H "Authorization: Bearer pat_..." http://127.0.0.1:5000/repos

Routes: ``/`` public; ``/health/live`` and ``/health/ready`` (readiness: 503 while
the store is unreachable); ``/me`` any valid token; ``GET /repos`` needs ``repo:read``,
``POST /repos`` ``repo:write``; ``GET /repos/<name>`` ``repo:read`` for that repository
(``resource="name"``: a token limited to resources must list it); ``/admin/users`` (a blueprint) needs ``admin``;
``/status`` is an async view needing ``status:read`` or ``admin``;
``/api/tokens...`` is the token management REST API and ``/settings/tokens``
the token settings page (after the demo ``/login``); ``/admin/tokens...``,
``/admin/sweep`` and ``/admin/log`` the administration API for the users named
in ``PAT_ADMIN_USERS`` (comma-separated; nobody by default) once logged in.

Environment: ``PAT_STORE_URL``, ``PAT_CACHE_URL``, ``PAT_CACHE_PREFIX``, ``PAT_ADMIN_USERS``,
and ``FLASK_SECRET_KEY`` for the session cookie (random per process when unset).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from typing import Any

from flask import Blueprint, Flask, abort, redirect, request, session

from pat_middleware import PATAuth
from pat_middleware.cli.demo import AFTER_LOGIN, LOGIN_FORM, SCOPES, user_from_form
from pat_middleware.flask import (
    PAT,
    admin_blueprint,
    current_principal,
    health_blueprint,
    scopes_required,
    settings_blueprint,
    token_blueprint,
)

pat = PAT()
admin = Blueprint("admin", __name__, url_prefix="/admin")

#: The app's own data: a toy in-memory repository list per user.
REPOS: dict[str, list[str]] = {}


@admin.get("/users")
@scopes_required("admin")
def list_users() -> dict[str, Any]:
    return {"users": sorted(REPOS)}


def session_user() -> str | None:
    """The signed-in user (the management blueprints' ``current_user``)."""
    value = session.get("user")
    return value if isinstance(value, str) else None


def admin_user() -> bool:
    """The admin API's ``is_admin``: the signed-in user is listed in ``PAT_ADMIN_USERS``.

    A login, not a token scope: with the example's open policy any user could
    give themselves a token with any scope (see docs/management.md, "Administration")."""
    admins = {name.strip() for name in os.environ.get("PAT_ADMIN_USERS", "").split(",") if name.strip()}
    return session_user() in admins


def add_management(app: Flask, auth: PATAuth | None = None, **page_options: Any) -> None:
    """Demo login at /login, the REST API at /api, the settings page at /settings/tokens.

    ``auth=None``: the app's ``PAT`` extension.
    """

    def login() -> Any:
        if request.method == "GET":
            return LOGIN_FORM
        try:
            username = request.form.get("username")
        except Exception:  # the body could not be read (cut short, broken chunks): the client's fault
            abort(400)
        session.clear()
        user = user_from_form(username)
        if user:
            session["user"] = user
        return redirect(AFTER_LOGIN, code=303)

    app.add_url_rule("/login", "demo_login", login, methods=["GET", "POST"])
    app.register_blueprint(token_blueprint(auth, session_user))
    options = {"available_scopes": SCOPES, "login_url": "/login", **page_options}
    app.register_blueprint(settings_blueprint(auth, session_user, **options))


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The app factory ``flask --app examples.flask_app`` finds."""
    app = Flask(__name__)
    for key in ("PAT_STORE_URL", "PAT_CACHE_URL", "PAT_CACHE_PREFIX"):
        if os.environ.get(key):
            app.config[key] = os.environ[key]
    app.config["SECRET_KEY"] = os.environ.get("FLASK_SECRET_KEY") or secrets.token_hex(32)
    app.config["SESSION_COOKIE_SAMESITE"] = "Strict"
    app.config.update(config or {})
    pat.init_app(app)
    app.register_blueprint(health_blueprint())  # /health/live, /health/ready
    app.register_blueprint(admin)
    add_management(app)
    # /admin/users above stays the app's own; every other path below /admin is the admin API's
    app.register_blueprint(admin_blueprint(is_admin=admin_user, current_user=session_user))

    @app.get("/")
    def index() -> dict[str, Any]:
        who = current_principal.user_id if current_principal else None
        return {"service": "example", "authenticated_as": who}

    @app.get("/me")
    @scopes_required()
    def me() -> dict[str, Any]:
        return {
            "user": current_principal.user_id,
            "token": current_principal.token_name,
            "scopes": sorted(current_principal.scopes),
        }

    @app.get("/repos")
    @scopes_required("repo:read")
    def list_repos() -> dict[str, Any]:
        return {"repos": REPOS.get(current_principal.user_id, [])}

    @app.get("/repos/<name>")
    @scopes_required("repo:read", resource="name")
    def repo(name: str) -> dict[str, Any]:
        return {"name": name, "exists": name in REPOS.get(current_principal.user_id, [])}

    @app.post("/repos")
    @scopes_required("repo:write")
    def create_repo() -> tuple[dict[str, Any], int]:
        try:
            payload = request.get_json(silent=True)
        except Exception:  # the body could not be read (cut short, broken chunks): the client's fault
            payload = None
        name = payload.get("name") if isinstance(payload, dict) else None
        if not isinstance(name, str) or not name.strip() or not name.isprintable():
            return {"error": "invalid_request", "error_description": 'send JSON {"name": "<repository name>"}'}, 400
        REPOS.setdefault(current_principal.user_id, []).append(name.strip())
        return {"created": name.strip()}, 201

    @app.get("/status")
    @scopes_required("status:read", "admin", any=True)
    async def status() -> dict[str, Any]:
        await asyncio.sleep(0)  # stands for an awaited health check
        return {"status": "ok", "checked_by": current_principal.user_id}

    return app
