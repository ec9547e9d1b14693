"""One SQLite token store file serving a Starlette app, a Flask app and a Django project at once.

Each app has its own ``PATAuth`` (as three services or processes would), all on
the same file: a token minted through one works on the others, a revocation
through one reaches the others, and all answer the same requests with the
same status, challenge, body and expiry header. (The Django side is the tests'
project, ``tests/django_urls.py``, with ``settings.PAT = {"AUTH": its PATAuth}``.)
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import webtest
from django.core.management import call_command
from django.test import Client as DjangoClient
from flask import Flask
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from pat_middleware import PATAuth
from pat_middleware.core.tokens import generate
from pat_middleware.django.conf import reset as reset_django
from pat_middleware.flask import PAT, current_principal, scopes_required
from pat_middleware.starlette import PATMiddleware as StarlettePATMiddleware
from pat_middleware.starlette import requires_scopes
from tests.helpers import FakeClock
from tests.test_wsgi import bearer
from tests.wsgi_fixtures import make_auth

PATHS = ("/whoami", "/repos")


def starlette_app(auth: PATAuth) -> Starlette:
    async def whoami(request: Request) -> JSONResponse:
        principal = request.scope["pat"]
        return JSONResponse({"user": principal.user_id if principal else None})

    @requires_scopes("repo:read")
    async def repos(request: Request) -> JSONResponse:
        return JSONResponse({"user": request.scope["pat"].user_id})

    @requires_scopes("repo:read", resource="repo")
    async def repo(request: Request) -> JSONResponse:
        return JSONResponse({"user": request.scope["pat"].user_id})

    return Starlette(
        routes=[Route("/whoami", whoami), Route("/repos", repos), Route("/repos/{repo:path}", repo)],
        middleware=[Middleware(StarlettePATMiddleware, auth=auth)],
    )


def flask_app(auth: PATAuth) -> Flask:
    app = Flask(__name__)
    PAT(app, auth=auth)

    @app.get("/whoami")
    def whoami() -> dict[str, Any]:
        return {"user": current_principal.user_id if current_principal else None}

    @app.get("/repos")
    @scopes_required("repo:read")
    def repos() -> dict[str, Any]:
        return {"user": current_principal.user_id}

    @app.get("/repos/<path:repo>")
    @scopes_required("repo:read", resource="repo")
    def repo(repo: str) -> dict[str, Any]:
        return {"user": current_principal.user_id}

    return app


Auths = tuple[PATAuth, PATAuth, PATAuth]
Clients = tuple[TestClient, webtest.TestApp, DjangoClient]


@pytest.fixture
def auths(tmp_path: Path, clock: FakeClock, settings: Any) -> Iterator[Auths]:
    path = tmp_path / "shared.db"
    trio = make_auth(path, clock), make_auth(path, clock), make_auth(path, clock)
    settings.PAT = {"AUTH": trio[2]}  # the Django project's engine
    yield trio
    reset_django()
    for auth in trio:
        auth.close()


@pytest.fixture
def clients(auths: Auths) -> Iterator[Clients]:
    with TestClient(starlette_app(auths[0])) as starlette_client:
        yield starlette_client, webtest.TestApp(flask_app(auths[1])), DjangoClient()


def answers(clients: Clients, path: str, headers: dict[str, str]) -> list[tuple[Any, ...]]:
    """(status, WWW-Authenticate, JSON body, expiry header) from the Starlette app, the Flask app
    and the Django project."""
    starlette_client, flask_client, django_client = clients
    first = starlette_client.get(path, headers=headers)
    second = flask_client.get(path, headers=headers, expect_errors=True)
    third = django_client.get(path, headers=headers)
    return [
        (first.status_code, first.headers.get("www-authenticate"), first.json(),
         first.headers.get("pat-token-expiration")),
        (second.status_int, second.headers.get("WWW-Authenticate"), second.json,
         second.headers.get("PAT-Token-Expiration")),
        (third.status_code, third.headers.get("WWW-Authenticate"), third.json(),
         third.headers.get("PAT-Token-Expiration")),
    ]  # fmt: skip


def test_a_token_minted_by_the_flask_side_works_on_starlette_and_back(clients: Clients, auths: Auths) -> None:
    starlette_auth, flask_auth, django_auth = auths
    from_flask = flask_auth.manager.create("alice", "laptop", ["repo:read"]).token
    from_starlette = starlette_auth.manager.create("bob", "ci", ["repo:read"]).token
    from_django = django_auth.manager.create("carol", "ci", ["repo:read"]).token
    for token, user in ((from_flask, "alice"), (from_starlette, "bob"), (from_django, "carol")):
        for path in PATHS:
            on_starlette, on_flask, on_django = answers(clients, path, bearer(token))
            assert on_starlette == on_flask == on_django
            assert on_flask[0] == 200 and on_flask[2] == {"user": user}
            assert on_flask[3] is not None and on_flask[3].endswith(" UTC")


def test_a_token_minted_with_flask_pat_works_on_starlette(clients: Clients, tmp_path: Path) -> None:
    app = flask_app(make_auth(tmp_path / "shared.db", FakeClock()))
    result = app.test_cli_runner().invoke(args=["pat", "create", "carol", "cli", "-s", "repo:read"])
    assert result.exit_code == 0, result.output
    response = clients[0].get("/repos", headers=bearer(result.stdout.strip()))
    assert (response.status_code, response.json()) == (200, {"user": "carol"})
    app.extensions["pat"].auth.close()


def test_a_token_minted_with_manage_py_pat_works_on_flask(clients: Clients, capsys: pytest.CaptureFixture[str]) -> None:
    call_command("pat", "create", "dave", "cli", "-s", "repo:read")
    token = capsys.readouterr().out.strip()
    response = clients[1].get("/repos", headers=bearer(token))
    assert (response.status_int, response.json) == (200, {"user": "dave"})


def test_a_revocation_through_one_reaches_the_other(clients: Clients, auths: Auths, clock: FakeClock) -> None:
    starlette_auth, flask_auth, django_auth = auths
    token = flask_auth.manager.create("alice", "laptop", ["repo:read"]).token
    assert [a[0] for a in answers(clients, "/repos", bearer(token))] == [200, 200, 200]
    starlette_auth.manager.revoke(token[4:16])
    on_starlette, on_flask, on_django = answers(clients, "/repos", bearer(token))
    assert on_starlette[0] == 401  # the revoking side knows at once
    # The others have no Redis channel: the store's change feed tells them at their next poll.
    for other in (flask_auth, django_auth):
        assert other.feed is not None
        assert other.feed.poll_once() == [token[4:16]]
    on_starlette, on_flask, on_django = answers(clients, "/repos", bearer(token))
    assert on_starlette == on_flask == on_django
    assert on_flask[0] == 401


def test_every_edge_gives_the_same_answers(clients: Clients, auths: Auths, clock: FakeClock) -> None:
    _, flask_auth, _ = auths
    no_scope = flask_auth.manager.create("alice", "other", ["issues:read"]).token
    short = flask_auth.manager.create("alice", "short", ["repo:read"], expires_in=timedelta(minutes=1)).token
    web = flask_auth.manager.create("alice", "web", ["repo:read"], resources=["acme/web", "tools/*"]).token
    web_no_scope = flask_auth.manager.create("alice", "web-issues", ["issues:read"], resources=["acme/web"]).token
    everything = flask_auth.manager.create("alice", "everything", ["repo:read"]).token
    clock.advance(timedelta(minutes=1))
    cases: list[tuple[str, dict[str, str]]] = [
        ("/repos", {}),
        ("/whoami", {}),
        ("/repos", {"Authorization": "Bearer"}),
        ("/repos", {"Authorization": "Bearer a b"}),
        ("/repos", {"Authorization": "bearer " + generate()[0]}),
        ("/whoami", bearer("pat_nonsense")),
        ("/repos", bearer(short)),
        ("/repos", bearer(no_scope)),
        ("/whoami", {"Authorization": "Basic YWxpY2U6cHc="}),
        ("/repos/acme/web", bearer(web)),
        ("/repos/tools/lint", bearer(web)),
        ("/repos/acme/api", bearer(web)),
        ("/repos/acme/web", bearer(web_no_scope)),
        ("/repos/acme/api", bearer(everything)),
        ("/repos", bearer(web)),  # a route about no resource: the scopes decide
    ]
    statuses = []
    for path, headers in cases:
        on_starlette, on_flask, on_django = answers(clients, path, headers)
        assert on_starlette == on_flask == on_django, (path, headers)
        statuses.append(on_flask[0])
    assert statuses == [401, 200, 400, 400, 401, 401, 401, 403, 200, 200, 200, 403, 403, 200, 200]
