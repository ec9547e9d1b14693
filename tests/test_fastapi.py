"""FastAPI: ``RequireScopes`` dependencies, the error handler, OpenAPI security, WebSockets."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, WebSocket
from helpers import FakeClock
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect
from test_asgi import INVALID_TOKEN_CHALLENGE, REALM_CHALLENGE, assert_error, bearer, make_auth, mint

from pat_middleware import PATAuth, Principal
from pat_middleware.errors import AuthenticationRequired, InsufficientScope, error_response
from pat_middleware.fastapi import RequireScopes, register_error_handler
from pat_middleware.starlette import PATMiddleware

WRITE_CHALLENGE = (
    'Bearer realm="api", error="insufficient_scope", '
    'error_description="The token needs all of these scopes: repo:write", scope="repo:write"'
)


def build_app(auth: PATAuth, calls: list[str], *, handler: bool) -> FastAPI:
    app = FastAPI()
    app.add_middleware(PATMiddleware, auth=auth)
    if handler:
        register_error_handler(app)

    @app.get("/repos")
    async def list_repos(principal: Annotated[Principal, Depends(RequireScopes("repo:read"))]) -> dict[str, Any]:
        calls.append("list")
        return {"user": principal.user_id, "scopes": sorted(principal.scopes)}

    @app.post("/repos", dependencies=[Depends(RequireScopes("repo:write"))], status_code=201)
    def create_repo() -> dict[str, str]:
        calls.append("create")
        return {"created": "yes"}

    @app.get("/me")
    def me(principal: Annotated[Principal, Depends(RequireScopes())]) -> dict[str, str]:
        calls.append("me")
        return {"user": principal.user_id}

    @app.get("/either", dependencies=[Depends(RequireScopes("repo:write", "admin:*", any=True))])
    def either() -> dict[str, str]:
        calls.append("either")
        return {}

    @app.get("/public")
    def public() -> dict[str, str]:
        calls.append("public")
        return {"public": "yes"}

    @app.websocket("/ws")
    async def events(
        websocket: WebSocket, principal: Annotated[Principal, Depends(RequireScopes("events:read"))]
    ) -> None:
        calls.append("ws")
        await websocket.accept()
        await websocket.send_json({"user": principal.user_id})
        await websocket.close()

    return app


@pytest.fixture
def auth() -> Iterator[PATAuth]:
    auth = make_auth(FakeClock())
    yield auth
    auth.close()


@pytest.fixture
def calls() -> list[str]:
    return []


@pytest.fixture(params=[True, False], ids=["handler", "default-handlers"])
def handler(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def client(auth: PATAuth, calls: list[str], handler: bool) -> Iterator[TestClient]:
    with TestClient(build_app(auth, calls, handler=handler), client=("127.0.0.1", 5000)) as client:
        yield client


def test_valid_token_with_the_scope(client: TestClient, auth: PATAuth, calls: list[str]) -> None:
    token = mint(auth, ("repo:read", "repo:write"))
    response = client.get("/repos", headers=bearer(token))
    assert response.json() == {"user": "alice", "scopes": ["repo:read", "repo:write"]}
    assert response.headers["pat-token-expiration"] == "2026-01-31 00:00:00 UTC"
    assert client.post("/repos", headers=bearer(token)).status_code == 201
    assert client.get("/me", headers=bearer(token)).json() == {"user": "alice"}
    assert client.get("/public").json() == {"public": "yes"}
    assert calls == ["list", "create", "me", "public"]


def test_refusals_have_the_cores_status_and_challenge(
    client: TestClient, auth: PATAuth, calls: list[str], handler: bool
) -> None:
    reader = mint(auth, ("repo:read",))
    anonymous = client.get("/repos")
    insufficient = client.post("/repos", headers=bearer(reader))
    for response, status, challenge, exc in [
        (anonymous, 401, REALM_CHALLENGE, AuthenticationRequired()),
        (insufficient, 403, WRITE_CHALLENGE, InsufficientScope(["repo:write"])),
    ]:
        assert response.status_code == status
        assert response.headers["www-authenticate"] == challenge
        assert response.headers["cache-control"] == "no-store"
        if handler:  # byte for byte what the middleware answers
            assert response.content == error_response(exc, "api")[2]
        else:
            assert response.json() == {"detail": exc.description}
    either = client.get("/either", headers=bearer(reader))
    assert either.status_code == 403 and either.headers["www-authenticate"].endswith('scope="repo:write admin:*"')
    assert calls == []


def test_invalid_tokens_never_reach_a_dependency(client: TestClient, calls: list[str]) -> None:
    response = client.get("/public", headers=bearer("pat_0000"))
    assert_error(response, 401, "invalid_token", INVALID_TOKEN_CHALLENGE)
    assert calls == []


def test_websocket_with_the_scope(client: TestClient, auth: PATAuth, calls: list[str]) -> None:
    with client.websocket_connect("/ws", headers=bearer(mint(auth, ("events:read",)))) as ws:
        assert ws.receive_json() == {"user": "alice"}
    assert calls == ["ws"]


def test_websocket_refused(client: TestClient, auth: PATAuth, calls: list[str], handler: bool) -> None:
    reader = mint(auth, ("repo:read",))
    if handler:  # the core's answer through the denial-response extension
        with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/ws", headers=bearer(reader)):
            pass
        assert denied.value.status_code == 403
        assert denied.value.json()["error"] == "insufficient_scope"
    else:  # FastAPI's default: close 1008 before accept
        with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect("/ws", headers=bearer(reader)):
            pass
        assert closed.value.code == 1008 and closed.value.reason == "insufficient_scope"
    assert calls == []


def test_openapi_declares_the_bearer_scheme(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    scheme = doc["components"]["securitySchemes"]["PAT"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    assert doc["paths"]["/repos"]["get"]["security"] == [{"PAT": []}]
    assert doc["paths"]["/repos"]["post"]["security"] == [{"PAT": []}]
    assert doc["paths"]["/me"]["get"]["security"] == [{"PAT": []}]
    assert "security" not in doc["paths"]["/public"]["get"]
    # the dependency adds no parameter of its own to the operation
    assert "parameters" not in doc["paths"]["/repos"]["get"]


def test_depends_on_the_class_itself_fails_when_the_route_is_declared() -> None:
    """``Depends(RequireScopes)`` (no call) would make ``*scopes`` a required query
    parameter: a 422 or a 500 per request. It fails when the route is declared."""
    app = FastAPI()
    message = r"RequireScopes must be called with its scopes: Depends\(RequireScopes\('scope'\)\)"
    with pytest.raises(TypeError, match=message):

        @app.get("/a", dependencies=[Depends(RequireScopes)])
        def in_dependencies() -> None:
            return None

    with pytest.raises(TypeError, match=message):

        @app.get("/b")
        def in_a_parameter(principal: Annotated[Any, Depends(RequireScopes)]) -> None:
            return None

    with pytest.raises(TypeError, match=message):

        @app.websocket("/ws")
        async def on_a_websocket(websocket: WebSocket, principal: Annotated[Any, Depends(RequireScopes)]) -> None:
            return None


def test_an_instance_keeps_its_dependency_signature() -> None:
    assert list(inspect.signature(RequireScopes("a")).parameters) == ["conn", "principal"]
    assert repr(RequireScopes("b", "a", any=True)) == "RequireScopes('b', 'a', any=True)"


@pytest.mark.parametrize("use", ["parameter", "dependencies"])
def test_without_the_middleware_the_answer_names_what_is_missing(use: str, caplog: pytest.LogCaptureFixture) -> None:
    from pat_middleware.fastapi import MISSING_MIDDLEWARE

    app = FastAPI()
    if use == "parameter":

        @app.get("/repos")
        def repos(principal: Annotated[Principal, Depends(RequireScopes("repo:read"))]) -> dict[str, str]:
            return {"user": principal.user_id}

    else:

        @app.get("/repos", dependencies=[Depends(RequireScopes("repo:read"))])
        def repos() -> dict[str, str]:
            return {}

    with caplog.at_level("ERROR", logger="pat_middleware"):
        answer = TestClient(app, raise_server_exceptions=True).get("/repos", headers=bearer("pat_whatever"))
    assert answer.status_code == 500
    assert answer.json() == {"detail": MISSING_MIDDLEWARE}
    assert "app.add_middleware(PATMiddleware, auth=auth)" in MISSING_MIDDLEWARE
    assert [r.getMessage() for r in caplog.records] == [f"{MISSING_MIDDLEWARE} (path /repos)"]
