"""The WSGI app that ``bench/server_wsgi.py`` runs under gunicorn: one view, three mounts.

``/bare``       a Flask app with the view alone;
``/httpauth``   the same behind Flask-HTTPAuth's ``HTTPTokenAuth`` whose
                ``verify_token`` is one dict lookup (``login_required`` on the view);
``/pat``        the same with ``PAT(app)`` on the token store at ``PAT_BENCH_STORE``
                (a SQLite file) and ``@scopes_required("repo:read")`` on the view.

werkzeug's ``DispatcherMiddleware`` picks the app by path prefix, so routing
costs every mount the same.
"""

from __future__ import annotations

import os

from flask import Flask
from flask_httpauth import HTTPTokenAuth
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from pat_middleware import PATAuth
from pat_middleware.flask import PAT, scopes_required

TOKEN = os.environ["PAT_BENCH_TOKEN"]


def view() -> tuple[str, int, dict[str, str]]:
    return "ok", 200, {"Content-Type": "text/plain"}


def bare() -> Flask:
    app = Flask("bare")
    app.add_url_rule("/", "repos", view)
    return app


def httpauth() -> Flask:
    app = Flask("httpauth")
    tokens = {TOKEN: "bench"}
    http_auth = HTTPTokenAuth(scheme="Bearer")
    http_auth.verify_token(tokens.get)
    app.add_url_rule("/", "repos", http_auth.login_required(view))
    return app


def pat() -> Flask:
    app = Flask("pat")
    PAT(app, auth=PATAuth.from_url(os.environ["PAT_BENCH_STORE"]))
    app.add_url_rule("/", "repos", scopes_required("repo:read")(view))
    return app


app = DispatcherMiddleware(bare(), {"/bare": bare(), "/httpauth": httpauth(), "/pat": pat()})
