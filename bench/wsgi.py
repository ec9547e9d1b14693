"""What the Flask extension costs per request, against a bare Flask app.

Run: ``python bench/wsgi.py``. Four apps, timed interleaved in one run (each
round times every app once; the median of the rounds is printed):

* the bare Flask app (one route returning a small text response);
* the same app with ``PAT(app)`` and a valid, cached token (the middleware
  verifies it and sets the principal; the view is not decorated);
* the same, with ``@scopes_required("repo:read")`` on the view;
* the same app with Flask-HTTPAuth's ``HTTPTokenAuth`` whose ``verify_token``
  is one dict lookup and ``@auth.login_required`` on the view, for reference.

The WSGI apps are called directly (a fresh environ dict per request, as a
server builds one, and a no-op ``start_response``; the body is consumed and
closed): no network, no server, so the figures are the layers' own cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from flask import Flask
from flask_httpauth import HTTPTokenAuth
from report import print_ratios, request_args
from werkzeug.test import EnvironBuilder

from pat_middleware import MemoryStore, PATAuth
from pat_middleware.flask import PAT, scopes_required

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Any]


def view() -> tuple[str, int, dict[str, str]]:
    return "ok", 200, {"Content-Type": "text/plain"}


def bare() -> Flask:
    app = Flask("bench")
    app.add_url_rule("/repos", "repos", view)
    return app


def with_pat(auth: PATAuth, decorate: bool) -> Flask:
    app = Flask("bench")
    PAT(app, auth=auth)
    app.add_url_rule("/repos", "repos", scopes_required("repo:read")(view) if decorate else view)
    return app


def with_httpauth(tokens: dict[str, str]) -> Flask:
    app = Flask("bench")
    http_auth = HTTPTokenAuth(scheme="Bearer")

    http_auth.verify_token(tokens.get)
    app.add_url_rule("/repos", "repos", http_auth.login_required(view))
    return app


def environ_for(token: str) -> dict[str, Any]:
    builder = EnvironBuilder(
        path="/repos",
        base_url="http://api.example.com/",
        headers=[("Authorization", f"Bearer {token}"), ("User-Agent", "bench/1.0"), ("Accept", "*/*")],
        environ_base={"REMOTE_ADDR": "127.0.0.1"},
    )
    return builder.get_environ()


def per_request_us(app: WSGIApp, template: dict[str, Any], n: int) -> float:
    statuses: set[str] = set()

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        statuses.add(status)
        return lambda data: None

    start = time.thread_time()
    for _ in range(n):
        body = app(dict(template), start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
    elapsed = time.thread_time() - start
    if statuses != {"200 OK"}:
        raise SystemExit(f"unexpected statuses {statuses}")
    return elapsed / n * 1e6


def run(rounds: int, n: int) -> dict[str, list[float]]:
    auth = PATAuth(MemoryStore())
    token = auth.manager.create("bench", "bench", ["repo:read"], expires_in=timedelta(days=1)).token
    template = environ_for(token)
    apps: dict[str, WSGIApp] = {
        "bare Flask": bare(),
        "PAT (cached token)": with_pat(auth, decorate=False),
        "PAT + scopes_required": with_pat(auth, decorate=True),
        "Flask-HTTPAuth (dict)": with_httpauth({token: "bench"}),
    }
    samples: dict[str, list[float]] = {name: [] for name in apps}
    for app in apps.values():  # warm up: first-request setup, fill the cache
        per_request_us(app, template, 200)
    for _ in range(rounds):
        for name, app in apps.items():
            samples[name].append(per_request_us(app, template, n))
    auth.close()
    return samples


def main() -> None:
    args = request_args(__doc__)
    samples = run(args.rounds, args.requests)
    print_ratios(samples, "bare Flask", label="app", unit="µs/request", ratio="x bare")


if __name__ == "__main__":
    main()
