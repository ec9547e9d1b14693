"""Fine-grained tokens at the edges: ``resource=`` on Starlette's ``requires_scopes``,
FastAPI's ``RequireScopes`` and Flask's ``scopes_required``, with the same answers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from flask import Flask
from flask import request as flask_request
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from pat_middleware import MemoryStore, PATAuth
from pat_middleware.core.models import Principal
from pat_middleware.fastapi import RequireScopes, register_error_handler
from pat_middleware.flask import PAT, scopes_required
from pat_middleware.starlette import PATMiddleware, requires_scopes
from tests.helpers import FAST_ARGON2

RESOURCE_DESCRIPTION = "The token is not valid for this resource"
RESOURCE_CHALLENGE = (
    f'Bearer realm="api", error="insufficient_scope", error_description="{RESOURCE_DESCRIPTION}", scope="repo:read"'
)


@pytest.fixture
def auth() -> Iterator[PATAuth]:
    a = PATAuth(MemoryStore(), hasher=FAST_ARGON2, realm="api")
    yield a
    a.close()


def starlette_app(auth: PATAuth) -> Callable[[], Any]:
    @requires_scopes("repo:read", resource="repo")
    async def repo(request: Request) -> JSONResponse:
        return JSONResponse({"repo": request.path_params["repo"]})

    @requires_scopes("repo:read", resource="number")
    def project(request: Request) -> JSONResponse:
        return JSONResponse({"project": request.path_params["number"]})

    @requires_scopes("repo:read", resource=lambda request: request.headers.get("X-Org"))
    async def org(request: Request) -> JSONResponse:
        return JSONResponse({"org": request.headers.get("X-Org")})

    routes = [
        Route("/repos/{repo:path}", repo),
        Route("/projects/{number:int}", project),
        Route("/org", org),
    ]
    return lambda: Starlette(routes=routes, middleware=[Middleware(PATMiddleware, auth=auth)])


def fastapi_app(auth: PATAuth) -> Callable[[], Any]:
    app = FastAPI()
    register_error_handler(app)
    app.add_middleware(PATMiddleware, auth=auth)

    @app.get("/repos/{repo:path}")
    async def repo(repo: str, p: Principal = Depends(RequireScopes("repo:read", resource="repo"))) -> dict[str, Any]:
        return {"repo": repo}

    @app.get("/projects/{number}")
    def project(number: int, p: Principal = Depends(RequireScopes("repo:read", resource="number"))) -> dict[str, Any]:
        return {"project": number}

    def org_header(request: Any) -> Any:
        return request.headers.get("X-Org")

    @app.get("/org")
    async def org(p: Principal = Depends(RequireScopes("repo:read", resource=org_header))) -> dict[str, Any]:
        return {"org": "ok"}

    return lambda: app


def flask_app(auth: PATAuth) -> Callable[[], Any]:
    app = Flask(__name__)
    PAT(app, auth=auth)

    @app.get("/repos/<path:repo>")
    @scopes_required("repo:read", resource="repo")
    def repo(repo: str) -> dict[str, Any]:
        return {"repo": repo}

    @app.get("/projects/<int:number>")
    @scopes_required("repo:read", resource="number")
    def project(number: int) -> dict[str, Any]:
        return {"project": number}

    @app.get("/org")
    @scopes_required("repo:read", resource=lambda request: request.headers.get("X-Org"))
    def org() -> dict[str, Any]:
        return {"org": flask_request.headers.get("X-Org")}

    return lambda: app


class Client:
    """The same GET through Starlette's TestClient or Flask's test client."""

    def __init__(self, kind: str, app: Any) -> None:
        self.kind = kind
        self.client = app.test_client() if kind == "flask" else TestClient(app)

    def get(self, path: str, token: str, **headers: str) -> tuple[int, dict[str, Any], str]:
        answer = self.client.get(path, headers={"Authorization": f"Bearer {token}", **headers})
        body = answer.get_data() if self.kind == "flask" else answer.content
        return answer.status_code, json.loads(body), answer.headers.get("WWW-Authenticate", "")


@pytest.fixture(params=["starlette", "fastapi", "flask"])
def client(request: pytest.FixtureRequest, auth: PATAuth) -> Client:
    build = {"starlette": starlette_app, "fastapi": fastapi_app, "flask": flask_app}[request.param]
    return Client(request.param, build(auth)())


def test_a_token_limited_to_resources_is_refused_elsewhere_with_403(client: Client, auth: PATAuth) -> None:
    limited = auth.manager.create("alice", "web", ["repo:read"], resources=["acme/web", "project:42", "42"]).token
    status, body, _ = client.get("/repos/acme/web", limited)
    assert (status, body) == (200, {"repo": "acme/web"})
    status, body, challenge = client.get("/repos/acme/secret-plans", limited)
    assert status == 403
    assert body == {"error": "insufficient_scope", "error_description": RESOURCE_DESCRIPTION}
    assert challenge == RESOURCE_CHALLENGE
    assert "secret-plans" not in json.dumps(body) + challenge  # the resource id is not echoed back
    assert client.get("/projects/42", limited)[0] == 200  # an int path parameter, as text
    assert client.get("/projects/43", limited)[0] == 403


def test_wildcards_callables_and_unrestricted_tokens(client: Client, auth: PATAuth) -> None:
    acme = auth.manager.create("alice", "acme", ["repo:read"], resources=["acme/*", "org:*"]).token
    assert client.get("/repos/acme/api/wiki", acme)[0] == 200
    assert client.get("/repos/acmeco/api", acme)[0] == 403
    assert client.get("/org", acme, **{"X-Org": "org:acme"})[0] == 200
    assert client.get("/org", acme, **{"X-Org": "other"})[0] == 403
    assert client.get("/org", acme)[0] == 403  # the callable could not tell: no restricted token passes
    everything = auth.manager.create("alice", "all", ["repo:read"]).token
    for path in ("/repos/anything/at/all", "/projects/7", "/org"):
        assert client.get(path, everything)[0] == 200


def test_scopes_are_checked_before_resources(client: Client, auth: PATAuth) -> None:
    no_scope = auth.manager.create("alice", "none", ["user"], resources=["acme/web"]).token
    status, body, _ = client.get("/repos/acme/web", no_scope)
    assert status == 403 and "scopes" in body["error_description"]


@pytest.mark.parametrize(
    ("resource", "error", "message"),
    [
        ("not an identifier", ValueError, "must name a path parameter"),
        ("", ValueError, "must name a path parameter"),
        (42, TypeError, "got int"),
        (dict, TypeError, "got type"),
    ],
)
def test_bad_resource_arguments_fail_where_written(resource: Any, error: type[Exception], message: str) -> None:
    for decorator in (requires_scopes, scopes_required):
        with pytest.raises(error, match=message):
            decorator("repo:read", resource=resource)
    with pytest.raises(error, match=message):
        RequireScopes("repo:read", resource=resource)


def test_a_flask_view_must_take_the_named_argument() -> None:
    with pytest.raises(TypeError, match="resource='repo' names no parameter"):

        @scopes_required("repo:read", resource="repo")
        def view(name: str) -> str:
            return name


def test_a_starlette_route_without_the_parameter_is_a_lookup_error(auth: PATAuth) -> None:
    @requires_scopes("repo:read", resource="repo")
    async def endpoint(request: Request) -> JSONResponse:
        return JSONResponse({})

    app = Starlette(routes=[Route("/x", endpoint)], middleware=[Middleware(PATMiddleware, auth=auth)])
    token = auth.manager.create("alice", "t", ["repo:read"], resources=["x"]).token
    with pytest.raises(LookupError, match="no path parameter 'repo'"):
        TestClient(app).get("/x", headers={"Authorization": f"Bearer {token}"})
