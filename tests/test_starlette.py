"""PATMiddleware in a Starlette app: ``requires_scopes`` on every endpoint kind,
Starlette's own ``requires`` on top, WebSockets, through TestClient and httpx."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import test_asgi
from helpers import FakeClock
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.endpoints import HTTPEndpoint
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket, WebSocketDisconnect
from test_asgi import (
    INVALID_REQUEST_CHALLENGE,
    INVALID_TOKEN_CHALLENGE,
    REALM_CHALLENGE,
    _collect,
    _receive_ws,
    assert_error,
    bearer,
    mint,
    ws_scope,
)

from pat_middleware import PATAuth
from pat_middleware.starlette import PATMiddleware, current_principal, requires_scopes

# The same ``auth`` fixture as test_asgi (pytest finds it by this module-level name;
# ``clock`` comes from conftest).
auth = test_asgi.auth

SCOPE_CHALLENGE = (
    'Bearer realm="api", error="insufficient_scope", '
    'error_description="The token needs all of these scopes: repo:write", scope="repo:write"'
)


class Calls:
    """Counts endpoint invocations: a refused request must never reach one."""

    def __init__(self) -> None:
        self.count = 0

    def hit(self, request: Any) -> dict[str, Any]:
        self.count += 1
        return {"user": request.user.identity, "kind": request.scope["type"]}


def build_app(auth: PATAuth, calls: Calls, **options: Any) -> Starlette:
    @requires_scopes("repo:read")
    async def async_read(request: Request) -> JSONResponse:
        return JSONResponse(calls.hit(request))

    @requires_scopes("repo:write")
    def sync_write(request: Request) -> JSONResponse:
        return JSONResponse(calls.hit(request))

    @requires_scopes("repo:write", "admin:org", any=True)
    async def any_of(request: Request) -> JSONResponse:
        return JSONResponse(calls.hit(request))

    @requires_scopes()
    async def any_token(request: Request) -> JSONResponse:
        return JSONResponse(calls.hit(request))

    @requires_scopes("admin:org")
    async def wildcard(request: Request) -> JSONResponse:
        return JSONResponse(calls.hit(request))

    async def public(request: Request) -> JSONResponse:
        return JSONResponse(calls.hit(request))

    class Endpoint(HTTPEndpoint):
        @requires_scopes("repo:read")
        async def get(self, request: Request) -> JSONResponse:
            return JSONResponse(calls.hit(request))

        @requires_scopes("repo:write")
        def post(self, request: Request) -> JSONResponse:
            return JSONResponse(calls.hit(request))

    @requires("repo:read")
    async def starlette_async(request: Request) -> JSONResponse:
        return JSONResponse(calls.hit(request))

    @requires(["repo:read", "repo:write"])
    def starlette_sync(request: Request) -> PlainTextResponse:
        calls.hit(request)
        return PlainTextResponse("ok")

    @requires_scopes("events:read")
    async def ws_events(websocket: WebSocket) -> None:
        calls.count += 1
        await websocket.accept()
        await websocket.send_json({"user": websocket.user.identity, "scopes": websocket.auth.scopes})
        await websocket.close()

    @requires("events:read")
    async def ws_starlette(websocket: WebSocket) -> None:
        calls.count += 1
        await websocket.accept()
        await websocket.send_text(current_principal(websocket).user_id)  # type: ignore[union-attr]
        await websocket.close()

    routes = [
        Route("/read", async_read),
        Route("/write", sync_write, methods=["GET", "POST"]),
        Route("/any-of", any_of),
        Route("/any-token", any_token),
        Route("/wildcard", wildcard),
        Route("/public", public),
        Route("/endpoint", Endpoint),
        Route("/starlette/async", starlette_async),
        Route("/starlette/sync", starlette_sync),
        WebSocketRoute("/ws", ws_events),
        WebSocketRoute("/ws/starlette", ws_starlette),
    ]
    return Starlette(routes=routes, middleware=[Middleware(PATMiddleware, auth=auth, **options)])


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def client(auth: PATAuth, calls: Calls) -> Iterator[TestClient]:
    with TestClient(build_app(auth, calls), client=("127.0.0.1", 5000)) as client:
        yield client


@pytest.fixture
def reader(auth: PATAuth) -> str:
    return mint(auth, ("repo:read", "events:read"), name="reader")


# -- §6 through TestClient and through httpx --------------------------------------------


def _table(auth: PATAuth, clock: FakeClock) -> list[tuple[str, str, dict[str, str], int, str, str | None]]:
    reader = mint(auth, ("repo:read",), name="r")
    expired = mint(auth, name="e", expires_in=timedelta(minutes=1))
    revoked = mint(auth, name="v")
    auth.manager.revoke(revoked[4:16])
    clock.advance(120)
    return [
        ("no credentials", "/read", {}, 401, "unauthorized", REALM_CHALLENGE),
        ("malformed", "/read", {"Authorization": "Bearer a b"}, 400, "invalid_request", INVALID_REQUEST_CHALLENGE),
        ("bad checksum", "/read", bearer(reader[:-2] + "00"), 401, "invalid_token", INVALID_TOKEN_CHALLENGE),
        ("expired", "/read", bearer(expired), 401, "invalid_token", INVALID_TOKEN_CHALLENGE),
        ("revoked", "/read", bearer(revoked), 401, "invalid_token", INVALID_TOKEN_CHALLENGE),
        ("scope missing", "/write", bearer(reader), 403, "insufficient_scope", SCOPE_CHALLENGE),
    ]


def test_design_table_through_testclient(client: TestClient, auth: PATAuth, clock: FakeClock, calls: Calls) -> None:
    for case, path, headers, status, error, challenge in _table(auth, clock):
        response = client.get(path, headers=headers)
        assert (case, response.status_code) == (case, status)
        assert_error(response, status, error, challenge)
    assert calls.count == 0


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_design_table_through_httpx(auth: PATAuth, clock: FakeClock, calls: Calls, anyio_backend: str) -> None:
    transport = httpx.ASGITransport(app=build_app(auth, calls))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        for _case, path, headers, status, error, challenge in _table(auth, clock):
            assert_error(await http.get(path, headers=headers), status, error, challenge)
    assert calls.count == 0


def test_two_headers_through_testclient(client: TestClient, reader: str, calls: Calls) -> None:
    headers = [("authorization", f"Bearer {reader}"), ("authorization", f"bearer {reader}")]
    assert_error(client.get("/read", headers=headers), 400, "invalid_request", INVALID_REQUEST_CHALLENGE)
    assert calls.count == 0


# -- requires_scopes on every endpoint kind ----------------------------------------------


def test_async_function_endpoint(client: TestClient, reader: str, calls: Calls) -> None:
    response = client.get("/read", headers={"Authorization": f"BEARER {reader}"})
    assert response.json() == {"user": "alice", "kind": "http"}
    assert response.headers["pat-token-expiration"] == "2026-01-31 00:00:00 UTC"
    assert calls.count == 1


def test_sync_function_endpoint(client: TestClient, auth: PATAuth, reader: str, calls: Calls) -> None:
    writer = mint(auth, ("repo:write",), name="writer")
    assert client.post("/write", headers=bearer(writer)).json()["user"] == "alice"
    response = client.post("/write", headers=bearer(reader))
    assert_error(response, 403, "insufficient_scope", SCOPE_CHALLENGE)
    assert response.headers["pat-token-expiration"]  # the app's answers carry it too
    assert_error(client.post("/write"), 401, "unauthorized", REALM_CHALLENGE)
    assert calls.count == 1


def test_http_endpoint_methods(client: TestClient, auth: PATAuth, reader: str, calls: Calls) -> None:
    assert client.get("/endpoint", headers=bearer(reader)).status_code == 200
    assert_error(client.post("/endpoint", headers=bearer(reader)), 403, "insufficient_scope", SCOPE_CHALLENGE)
    assert_error(client.get("/endpoint"), 401, "unauthorized", REALM_CHALLENGE)
    writer = mint(auth, ("repo:write",), name="writer")
    assert client.post("/endpoint", headers=bearer(writer)).status_code == 200
    assert calls.count == 2


def test_any_of_and_wildcards(client: TestClient, auth: PATAuth, reader: str, calls: Calls) -> None:
    admin = mint(auth, ("admin:*",), name="admin")
    assert client.get("/any-of", headers=bearer(admin)).status_code == 200
    assert client.get("/wildcard", headers=bearer(admin)).status_code == 200
    response = client.get("/any-of", headers=bearer(reader))
    assert response.status_code == 403
    assert response.headers["www-authenticate"].endswith('scope="repo:write admin:org"')
    assert "one of" in response.json()["error_description"]
    assert calls.count == 2


def test_no_scopes_means_any_valid_token(client: TestClient, reader: str, calls: Calls) -> None:
    assert client.get("/any-token", headers=bearer(reader)).status_code == 200
    assert_error(client.get("/any-token"), 401, "unauthorized", REALM_CHALLENGE)
    assert client.get("/public").json() == {"user": "", "kind": "http"}
    assert calls.count == 2


def test_requires_scopes_without_the_middleware_is_a_configuration_error() -> None:
    @requires_scopes("repo:read")
    async def endpoint(request: Request) -> JSONResponse:
        return JSONResponse({})

    app = Starlette(routes=[Route("/", endpoint)])
    with TestClient(app, raise_server_exceptions=True) as client, pytest.raises(RuntimeError, match="PATMiddleware"):
        client.get("/")


def test_requires_scopes_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="invalid scope"):
        requires_scopes("repo read")


# -- misplaced decorators fail when applied, not as a 500 ----------------------------------


async def _no_parameter() -> JSONResponse:
    return JSONResponse({})


async def _no_connection(x: int) -> JSONResponse:
    return JSONResponse({})


async def _other_name(req: Any) -> JSONResponse:
    return JSONResponse({})


async def _keyword_only_scope(*, scope: dict[str, Any]) -> JSONResponse:
    return JSONResponse({})


def _sync_websocket(websocket: WebSocket) -> None:
    return None


def _sync_annotated_websocket(socket: WebSocket) -> None:
    return None


class _Endpoint(HTTPEndpoint):
    async def get(self, request: Request) -> JSONResponse:
        return JSONResponse({})


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (_no_parameter, 'test_starlette._no_parameter: it has no "request" or "websocket" parameter'),
        (_no_connection, 'test_starlette._no_connection: it has no "request" or "websocket" parameter'),
        (_other_name, 'test_starlette._other_name: it has no "request" or "websocket" parameter'),
        (_keyword_only_scope, 'it has no "request" or "websocket" parameter'),
        (_sync_websocket, "_sync_websocket: it takes a WebSocket but is not async"),
        (_sync_annotated_websocket, "_sync_annotated_websocket: it takes a WebSocket but is not async"),
        (_Endpoint, "test_starlette._Endpoint: it is a class; decorate its methods"),
        (staticmethod(_no_parameter), "it is a staticmethod object; put @staticmethod above"),
        (classmethod(_no_parameter), "it is a classmethod object; put @classmethod above"),
        (max, "builtins.max: its signature cannot be read"),
        ("/path", "it is not a function but a str"),
    ],
)
def test_a_misplaced_requires_scopes_fails_when_applied(target: Any, message: str) -> None:
    decorate = requires_scopes("repo:read", "admin", any=True)
    with pytest.raises(
        TypeError, match=r"^@requires_scopes\('repo:read', 'admin', any=True\) cannot decorate .*"
    ) as refused:
        decorate(target)
    assert message in str(refused.value)


@pytest.mark.parametrize("target", [_no_parameter, _no_connection, _other_name, _Endpoint])
def test_starlette_requires_refuses_the_same_endpoints(target: Any) -> None:
    """The connection-parameter rule mirrors Starlette's own ``requires``."""
    with pytest.raises(Exception, match='No "request" or "websocket" argument'):
        requires("repo:read")(target)


def test_a_call_without_a_connection_still_names_the_endpoint() -> None:
    @requires_scopes("repo:read")
    async def endpoint(request: Request) -> None:
        return None

    with pytest.raises(TypeError, match="endpoint was called without a Request or WebSocket argument"):
        asyncio.run(endpoint(1))  # type: ignore[arg-type]


def test_connection_parameters_found_by_annotation(auth: PATAuth) -> None:
    """Besides the names ``request`` and ``websocket``, a parameter annotated
    ``Request``, ``WebSocket`` or ``HTTPConnection`` receives the connection."""

    @requires_scopes("repo:read")
    async def by_request(req: Request) -> JSONResponse:
        return JSONResponse({"user": req.user.identity})

    @requires_scopes("repo:read")
    def by_connection(conn: HTTPConnection) -> JSONResponse:
        return JSONResponse({"user": conn.user.identity})

    @requires_scopes("repo:read")
    async def by_websocket(socket: WebSocket) -> None:
        await socket.accept()
        await socket.send_text(socket.user.identity)
        await socket.close()

    routes = [Route("/a", by_request), Route("/b", by_connection), WebSocketRoute("/ws", by_websocket)]
    app = Starlette(routes=routes, middleware=[Middleware(PATMiddleware, auth=auth)])
    reader, writer = mint(auth, ("repo:read",), name="r"), mint(auth, ("repo:write",), name="w")
    with TestClient(app) as client:
        for path in ("/a", "/b"):
            assert client.get(path, headers=bearer(reader)).json() == {"user": "alice"}
            assert client.get(path, headers=bearer(writer)).status_code == 403
            assert client.get(path).status_code == 401
        with client.websocket_connect("/ws", headers=bearer(reader)) as ws:
            assert ws.receive_text() == "alice"
        with pytest.raises(WebSocketDenialResponse), client.websocket_connect("/ws", headers=bearer(writer)):
            pass


# -- Starlette's own requires on top ---------------------------------------------------------


def test_starlette_requires_sees_the_scopes(client: TestClient, auth: PATAuth, reader: str, calls: Calls) -> None:
    assert client.get("/starlette/async", headers=bearer(reader)).status_code == 200
    assert client.get("/starlette/async").status_code == 403  # Starlette's own answer
    assert client.get("/starlette/sync", headers=bearer(reader)).status_code == 403
    both = mint(auth, ("repo:read", "repo:write"), name="both")
    assert client.get("/starlette/sync", headers=bearer(both)).text == "ok"
    assert calls.count == 2


# -- WebSockets ---------------------------------------------------------------------------


def test_websocket_accepted_with_the_scope(client: TestClient, reader: str, calls: Calls) -> None:
    with client.websocket_connect("/ws", headers=bearer(reader)) as ws:
        assert ws.receive_json() == {"user": "alice", "scopes": ["events:read", "repo:read"]}
    with client.websocket_connect("/ws/starlette", headers=bearer(reader)) as ws:
        assert ws.receive_text() == "alice"
    assert calls.count == 2


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        ({}, 401, "unauthorized"),
        ({"Authorization": "Bearer pat_nope"}, 401, "invalid_token"),
        ("writer", 403, "insufficient_scope"),
    ],
)
def test_websocket_denied_through_the_denial_extension(
    client: TestClient, auth: PATAuth, calls: Calls, headers: Any, status: int, error: str
) -> None:
    if headers == "writer":
        headers = bearer(mint(auth, ("repo:write",), name="writer"))
    with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/ws", headers=headers):
        pass
    assert denied.value.status_code == status
    assert denied.value.json()["error"] == error
    assert denied.value.headers["www-authenticate"].startswith('Bearer realm="api"')
    assert calls.count == 0


def test_starlette_requires_on_a_websocket_closes(client: TestClient, auth: PATAuth, calls: Calls) -> None:
    writer = mint(auth, ("repo:write",), name="writer")
    with pytest.raises(WebSocketDisconnect), client.websocket_connect("/ws/starlette", headers=bearer(writer)):
        pass
    assert calls.count == 0


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_websocket_scope_refusal_without_denial_extension_closes_1008(
    auth: PATAuth, calls: Calls, anyio_backend: str
) -> None:
    app = build_app(auth, calls)
    writer = mint(auth, ("repo:write",), name="writer")
    sent: list[dict[str, Any]] = []
    await app(ws_scope(writer, denial=False), _receive_ws, _collect(sent))
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "insufficient_scope"}]
    sent.clear()
    await app(ws_scope(writer, denial=True), _receive_ws, _collect(sent))
    assert sent[0]["type"] == "websocket.http.response.start" and sent[0]["status"] == 403
    assert calls.count == 0
