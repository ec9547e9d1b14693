"""PATMiddleware as a plain ASGI app: DESIGN.md §6 through httpx's ASGITransport,
plus hand-built scopes for what a client library cannot send."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import FAST_ARGON2, FakeClock
from starlette.authentication import AuthCredentials, BaseUser, UnauthenticatedUser
from starlette.types import Receive, Scope, Send

from pat_middleware import MemoryStore, PATAuth, Policy, ScopeRules, SQLiteStore
from pat_middleware.core.models import Principal
from pat_middleware.core.tokens import generate
from pat_middleware.errors import GENERIC_TOKEN_DESCRIPTION
from pat_middleware.starlette import PATMiddleware, PATUser

pytestmark = pytest.mark.anyio

REALM_CHALLENGE = 'Bearer realm="api"'
INVALID_REQUEST_CHALLENGE = 'Bearer realm="api", error="invalid_request", error_description=...'
INVALID_TOKEN_CHALLENGE = f'Bearer realm="api", error="invalid_token", error_description="{GENERIC_TOKEN_DESCRIPTION}"'


# -- helpers shared with the Starlette, FastAPI and example tests ---------------------


def make_auth(clock: FakeClock | None = None, store: Any = None, **options: Any) -> PATAuth:
    """A PATAuth on a MemoryStore (fast argon2, injectable clock, expiry optional)."""
    return PATAuth(
        store if store is not None else MemoryStore(),
        hasher=FAST_ARGON2,
        clock=clock or FakeClock(),
        policy=Policy(require_expiry=False, max_lifetime=None),
        **options,
    )


def mint(auth: PATAuth, scopes: tuple[str, ...] = ("repo:read",), name: str = "t", **kw: Any) -> str:
    kw.setdefault("expires_in", timedelta(days=30))
    return auth.manager.create("alice", name, scopes, **kw).token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(response: httpx.Response, status: int, error: str, challenge: str | None) -> None:
    """The middleware's JSON error answer (DESIGN.md §6); ``challenge`` ending in ``...``
    is a prefix of the ``WWW-Authenticate`` value."""
    assert response.status_code == status, response.text
    if challenge is not None and challenge.endswith("..."):
        assert response.headers["www-authenticate"].startswith(challenge[:-3])
    else:
        assert response.headers.get("www-authenticate") == challenge
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.json()["error"] == error
    assert response.json()["error_description"]


class Recorder:
    """An ASGI app that records every scope it is called with and answers JSON
    describing what the middleware put in the scope."""

    def __init__(self) -> None:
        self.calls: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls.append(scope)
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": scope["user"].identity})
            await send({"type": "websocket.close", "code": 1000})
            return
        principal: Principal | None = scope["pat"]
        body = json.dumps(
            {
                "user": scope["user"].identity,
                "authenticated": scope["user"].is_authenticated,
                "scopes": list(scope["auth"].scopes),
                "token_id": principal.token_id if principal else None,
            }
        ).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def auth(clock: FakeClock) -> Iterator[PATAuth]:
    auth = make_auth(clock)
    yield auth
    auth.close()


@pytest.fixture
def inner() -> Recorder:
    return Recorder()


def client_for(app: Any, client: tuple[str, int] = ("127.0.0.1", 5000)) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=client), base_url="http://test")


@pytest.fixture
async def call(auth: PATAuth, inner: Recorder) -> AsyncIterator[Any]:
    """``call(method, url, **options)`` through PATMiddleware(inner, auth, **middleware_options)."""
    clients: list[httpx.AsyncClient] = []

    async def request(method: str, url: str, *, middleware: dict[str, Any] | None = None, **kw: Any) -> Any:
        client = client_for(PATMiddleware(inner, auth, **(middleware or {})))
        clients.append(client)
        return await client.request(method, url, **kw)

    yield request
    for client in clients:
        await client.aclose()


# -- §6: the table, row by row --------------------------------------------------------


async def test_valid_token_reaches_the_app_with_user_scopes_and_principal(
    auth: PATAuth, inner: Recorder, call: Any
) -> None:
    token = mint(auth, ("repo:read", "events:read"))
    response = await call("GET", "/repos", headers=bearer(token))
    assert response.status_code == 200
    assert response.json() == {
        "user": "alice",
        "authenticated": True,
        "scopes": ["events:read", "repo:read"],
        "token_id": token[4:16],
    }
    scope = inner.calls[0]
    assert isinstance(scope["user"], PATUser) and isinstance(scope["user"], BaseUser)
    assert scope["user"].display_name == "alice" and scope["user"].token_id == token[4:16]
    assert isinstance(scope["auth"], AuthCredentials)
    assert isinstance(scope["pat"], Principal) and scope["pat"].user_id == "alice"
    assert scope["pat_auth"] is auth


async def test_no_credentials_pass_as_anonymous_by_default(inner: Recorder, call: Any) -> None:
    response = await call("GET", "/repos")
    assert response.status_code == 200
    assert response.json() == {"user": "", "authenticated": False, "scopes": [], "token_id": None}
    assert isinstance(inner.calls[0]["user"], UnauthenticatedUser)
    assert inner.calls[0]["pat"] is None


async def test_no_credentials_when_required_is_401_bare_challenge(inner: Recorder, call: Any) -> None:
    response = await call("GET", "/repos", middleware={"required": True})
    assert_error(response, 401, "unauthorized", REALM_CHALLENGE)
    assert inner.calls == []


async def test_other_scheme_is_no_credentials(inner: Recorder, call: Any) -> None:
    basic = {"Authorization": "Basic YWxpY2U6cGFzcw=="}
    assert (await call("GET", "/", headers=basic)).json()["authenticated"] is False
    response = await call("GET", "/", headers=basic, middleware={"required": True})
    assert_error(response, 401, "unauthorized", REALM_CHALLENGE)
    assert len(inner.calls) == 1


@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "Bearer a b", 'Bearer "quoted"', "Bearer =abc", "Bearer a,b"])
async def test_malformed_header_is_400_invalid_request(value: str, inner: Recorder, call: Any) -> None:
    response = await call("GET", "/", headers={"Authorization": value})
    assert_error(response, 400, "invalid_request", INVALID_REQUEST_CHALLENGE)
    assert inner.calls == []


async def test_two_authorization_headers_are_400(auth: PATAuth, inner: Recorder, call: Any) -> None:
    token = mint(auth)
    headers = [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
    response = await call("GET", "/", headers=headers)
    assert_error(response, 400, "invalid_request", INVALID_REQUEST_CHALLENGE)
    assert inner.calls == []


async def test_token_in_header_and_query_is_400_when_query_tokens_are_on(
    auth: PATAuth, inner: Recorder, call: Any
) -> None:
    token = mint(auth)
    on = {"allow_query_token": True}
    response = await call("GET", "/", params={"access_token": token}, headers=bearer(token), middleware=on)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    response = await call("GET", "/", params=[("access_token", token), ("access_token", token)], middleware=on)
    assert response.status_code == 400
    assert inner.calls == []


async def test_query_tokens_are_off_by_default(auth: PATAuth, inner: Recorder, call: Any) -> None:
    token = mint(auth)
    # ignored, not verified: the request is anonymous, or 401 when a token is required
    assert (await call("GET", "/", params={"access_token": token})).json()["authenticated"] is False
    response = await call("GET", "/", params={"access_token": token}, middleware={"required": True})
    assert_error(response, 401, "unauthorized", REALM_CHALLENGE)
    # with a header token, a query parameter is not "a second place" while query tokens are off
    response = await call("GET", "/", params={"access_token": "junk"}, headers=bearer(token))
    assert response.json()["user"] == "alice"


async def test_query_token_when_allowed(auth: PATAuth, call: Any) -> None:
    token = mint(auth)
    on = {"allow_query_token": True}
    assert (await call("GET", "/", params={"access_token": token}, middleware=on)).json()["user"] == "alice"
    wrong = token[:-1] + ("x" if token[-1] != "x" else "y")
    response = await call("GET", "/", params={"access_token": wrong}, middleware=on)
    assert_error(response, 401, "invalid_token", INVALID_TOKEN_CHALLENGE)
    response = await call("GET", "/", params={"access_token": ""}, middleware=on)
    assert response.status_code == 400


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer", "bEaReR"])
async def test_scheme_is_case_insensitive(scheme: str, auth: PATAuth, call: Any) -> None:
    token = mint(auth)
    response = await call("GET", "/", headers={"Authorization": f"{scheme} {token}"})
    assert response.json()["user"] == "alice"


def _bad_format(auth: PATAuth, clock: FakeClock) -> str:
    return "pat_tooshort"


def _bad_checksum(auth: PATAuth, clock: FakeClock) -> str:
    token = mint(auth)
    return token[:-1] + ("A" if token[-1] != "A" else "B")


def _unknown(auth: PATAuth, clock: FakeClock) -> str:
    return generate("pat")[0]


def _wrong_secret(auth: PATAuth, clock: FakeClock) -> str:
    return generate("pat", key_id=mint(auth)[4:16])[0]


def _expired(auth: PATAuth, clock: FakeClock) -> str:
    token = mint(auth, expires_in=timedelta(hours=1))
    clock.advance(timedelta(hours=2))
    return token


def _revoked(auth: PATAuth, clock: FakeClock) -> str:
    token = mint(auth)
    auth.manager.revoke(token[4:16])
    return token


def _revoked_after_use(auth: PATAuth, clock: FakeClock) -> str:
    token = mint(auth)
    auth.verify(token)  # cached now; revocation must still win
    auth.manager.revoke(token[4:16])
    return token


@pytest.mark.parametrize(
    "make_token",
    [_bad_format, _bad_checksum, _unknown, _wrong_secret, _expired, _revoked, _revoked_after_use],
)
@pytest.mark.parametrize("exempt", [False, True])
async def test_invalid_tokens_are_401_and_look_alike(
    make_token: Any, exempt: bool, auth: PATAuth, clock: FakeClock, inner: Recorder, call: Any
) -> None:
    token = make_token(auth, clock)
    options = {"required": True, "exempt": ["/health"]} if exempt else {}
    response = await call("GET", "/health" if exempt else "/repos", headers=bearer(token), middleware=options)
    assert_error(response, 401, "invalid_token", INVALID_TOKEN_CHALLENGE)
    assert response.json()["error_description"] == GENERIC_TOKEN_DESCRIPTION
    assert token not in response.text
    assert inner.calls == []


# -- store outages: 503, never a pass --------------------------------------------------


def _outage_auths(tmp_path: Path) -> Iterator[tuple[str, PATAuth]]:
    """Real outages: an SQLite file that cannot be opened, a PostgreSQL port nobody listens on."""
    yield "sqlite", make_auth(store=SQLiteStore(tmp_path / "missing-dir" / "tokens.db"))
    from pat_middleware.stores.sqlalchemy import SQLAlchemyStore

    yield "postgres", make_auth(store=SQLAlchemyStore("postgresql+psycopg://postgres@127.0.0.1:9/none"))


@pytest.fixture(params=["sqlite", "postgres"])
def down(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PATAuth]:
    auth = dict(_outage_auths(tmp_path))[request.param]
    yield auth
    auth.close()


async def test_store_down_is_503_with_retry_after(auth: PATAuth, down: PATAuth, inner: Recorder) -> None:
    token = mint(auth)  # a well-formed token; the store that should know it is unreachable
    async with client_for(PATMiddleware(inner, down)) as client:
        response = await client.get("/repos", headers=bearer(token))
        also_exempt = await client.get("/health", headers=bearer(token))
    assert response.status_code == 503
    assert response.headers["retry-after"].isdigit()
    assert "www-authenticate" not in response.headers
    assert response.json()["error"] == "temporarily_unavailable"
    assert also_exempt.status_code == 503
    assert inner.calls == []


# -- exempt paths ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [("/health", 200), ("/health/db", 200), ("/healthz", 401), ("/static/app.css", 200), ("/static", 200),
     ("/repos", 401), ("/", 401)],
)  # fmt: skip
async def test_exempt_paths_need_no_token(path: str, status: int, call: Any) -> None:
    options = {"required": True, "exempt": ["/health", "/static/"]}
    assert (await call("GET", path, middleware=options)).status_code == status


async def test_valid_token_on_exempt_path_still_authenticates(auth: PATAuth, call: Any) -> None:
    token = mint(auth)
    response = await call("GET", "/health", headers=bearer(token), middleware={"required": True, "exempt": "/health"})
    assert response.json()["user"] == "alice"


async def test_exempt_paths_are_relative_to_root_path(auth: PATAuth, inner: Recorder) -> None:
    app = PATMiddleware(inner, auth, required=True, exempt=["/health"])
    sent: list[dict[str, Any]] = []
    scope = http_scope("/api/health", root_path="/api")
    await app(scope, _receive_http, _collect(sent))
    assert sent[0]["status"] == 200
    await app(http_scope("/api/repos", root_path="/api"), _receive_http, _collect(sent))
    assert sent[2]["status"] == 401


def test_exempt_paths_must_be_absolute(auth: PATAuth, inner: Recorder) -> None:
    with pytest.raises(ValueError, match="must be a string starting with '/'"):
        PATMiddleware(inner, auth, exempt=["health"])


# -- client address (CIDR allowlists) ------------------------------------------------


async def test_cidr_allowlist_uses_scope_client(auth: PATAuth, inner: Recorder) -> None:
    token = mint(auth, allowed_cidrs=["10.0.0.0/8"])
    async with client_for(PATMiddleware(inner, auth), client=("10.1.2.3", 4000)) as inside:
        assert (await inside.get("/", headers=bearer(token))).json()["user"] == "alice"
    async with client_for(PATMiddleware(inner, auth), client=("192.168.1.9", 4000)) as outside:
        assert_error(await outside.get("/", headers=bearer(token)), 401, "invalid_token", INVALID_TOKEN_CHALLENGE)
    sent: list[dict[str, Any]] = []
    no_client = http_scope("/", headers=[(b"authorization", f"Bearer {token}".encode())], client=None)
    await PATMiddleware(inner, auth)(no_client, _receive_http, _collect(sent))
    assert sent[0]["status"] == 401
    assert len(inner.calls) == 1


# -- the expiry header --------------------------------------------------------------


async def test_expiry_header_on_authenticated_responses(auth: PATAuth, call: Any) -> None:
    token = mint(auth, expires_in=timedelta(days=3))  # FakeClock starts 2026-01-01 00:00 UTC
    response = await call("GET", "/", headers=bearer(token))
    assert response.headers["pat-token-expiration"] == "2026-01-04 00:00:00 UTC"
    assert "pat-token-expiration" not in (await call("GET", "/")).headers


async def test_expiry_header_can_be_renamed_or_turned_off(auth: PATAuth, call: Any) -> None:
    token = mint(auth, expires_in=timedelta(days=3))
    off = await call("GET", "/", headers=bearer(token), middleware={"expiry_header": None})
    assert "pat-token-expiration" not in off.headers
    renamed = await call("GET", "/", headers=bearer(token), middleware={"expiry_header": "X-Token-Expires"})
    assert renamed.headers["x-token-expires"] == "2026-01-04 00:00:00 UTC"


async def test_no_expiry_header_for_a_token_that_never_expires(auth: PATAuth, call: Any) -> None:
    token = auth.manager.create("alice", "forever", ["repo:read"], never_expires=True).token
    response = await call("GET", "/", headers=bearer(token))
    assert response.json()["user"] == "alice"
    assert "pat-token-expiration" not in response.headers


async def test_expiry_header_does_not_change_the_apps_message(auth: PATAuth) -> None:
    token = mint(auth)
    start = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}

    async def reused(scope: Any, receive: Any, send: Any) -> None:
        await send(start)  # the same dict every time
        await send({"type": "http.response.body", "body": b"ok"})

    async with client_for(PATMiddleware(reused, auth)) as client:
        for _ in range(3):
            response = await client.get("/", headers=bearer(token))
            assert response.headers.get_list("pat-token-expiration") == ["2026-01-31 00:00:00 UTC"]
    assert start["headers"] == [(b"content-type", b"text/plain")]


# -- scope contents -------------------------------------------------------------------


async def test_auth_scopes_are_effective_scopes_and_read_only(clock: FakeClock, inner: Recorder) -> None:
    auth = make_auth(clock, scope_rules=ScopeRules({"repo": ["repo:read", "repo:write"]}))
    token = mint(auth, ("repo",))
    async with client_for(PATMiddleware(inner, auth)) as client:
        assert (await client.get("/", headers=bearer(token))).json()["scopes"] == ["repo", "repo:read", "repo:write"]
        await client.get("/", headers=bearer(token))
    first, second = inner.calls
    assert first["user"] is second["user"]  # built once per verified principal
    with pytest.raises(TypeError):
        first["auth"].scopes.append("admin")
    assert second["auth"].scopes == ["repo", "repo:read", "repo:write"]
    auth.close()


async def test_non_latin1_safe_header_bytes_are_400(auth: PATAuth, inner: Recorder) -> None:
    sent: list[dict[str, Any]] = []
    scope = http_scope("/", headers=[(b"authorization", b"Bearer t\xf6ken\xff")])
    await PATMiddleware(inner, auth)(scope, _receive_http, _collect(sent))
    assert sent[0]["status"] == 400
    assert inner.calls == []


async def test_lifespan_passes_through_untouched(auth: PATAuth, inner: Recorder) -> None:
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    await PATMiddleware(inner, auth, required=True)(scope, receive, _collect(sent))
    assert inner.calls == [scope] and set(scope) == {"type", "asgi", "state"}
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


# -- WebSocket at the ASGI level (both rejection paths) -------------------------------------


def http_scope(
    path: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    root_path: str = "",
    client: tuple[str, int] | None = ("127.0.0.1", 5000),
    kind: str = "http",
    extensions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A hand-built ASGI scope (http or websocket)."""
    scope: dict[str, Any] = {
        "type": kind,
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": "ws" if kind == "websocket" else "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": root_path,
        "query_string": b"",
        "headers": [(b"host", b"test"), *(headers or [])],
        "client": client,
        "server": ("127.0.0.1", 80),
        "extensions": extensions or {},
    }
    if kind == "http":
        scope["method"] = "GET"
    return scope


async def _receive_http() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _receive_ws() -> dict[str, Any]:
    return {"type": "websocket.connect"}


def _collect(sent: list[dict[str, Any]]) -> Any:
    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    return send


def ws_scope(token: str | None, *, denial: bool) -> dict[str, Any]:
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    extensions: dict[str, Any] = {"websocket.http.response": {}} if denial else {}
    return http_scope("/ws", headers, kind="websocket", extensions=extensions)


async def test_websocket_with_valid_token_is_accepted(auth: PATAuth, inner: Recorder) -> None:
    token = mint(auth)
    sent: list[dict[str, Any]] = []
    await PATMiddleware(inner, auth, required=True)(ws_scope(token, denial=False), _receive_ws, _collect(sent))
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == "alice"
    assert all("headers" not in m for m in sent)  # no expiry header on WebSocket messages


@pytest.mark.parametrize(
    ("token_kind", "required", "status", "code"),
    [("invalid", False, 401, 1008), ("missing", True, 401, 1008), ("malformed", False, 400, 1008)],
)
async def test_websocket_rejected_before_accept_without_denial_extension(
    token_kind: str, required: bool, status: int, code: int, auth: PATAuth, inner: Recorder
) -> None:
    token = {"invalid": generate("pat")[0], "missing": None, "malformed": "a b"}[token_kind]
    app = PATMiddleware(inner, auth, required=required)
    sent: list[dict[str, Any]] = []
    await app(ws_scope(token, denial=False), _receive_ws, _collect(sent))
    assert sent == [{"type": "websocket.close", "code": code, "reason": sent[0]["reason"]}]
    assert sent[0]["reason"] in {"invalid_token", "unauthorized", "invalid_request"}
    sent.clear()
    await app(ws_scope(token, denial=True), _receive_ws, _collect(sent))
    assert [m["type"] for m in sent] == ["websocket.http.response.start", "websocket.http.response.body"]
    assert sent[0]["status"] == status
    assert dict(sent[0]["headers"])[b"www-authenticate"].startswith(b'Bearer realm="api"')
    assert json.loads(sent[1]["body"])["error"] in {"invalid_token", "unauthorized", "invalid_request"}
    assert inner.calls == []


async def test_websocket_store_down_closes_1013_or_denies_503(auth: PATAuth, down: PATAuth, inner: Recorder) -> None:
    token = mint(auth)
    app = PATMiddleware(inner, down)
    sent: list[dict[str, Any]] = []
    await app(ws_scope(token, denial=False), _receive_ws, _collect(sent))
    assert sent == [{"type": "websocket.close", "code": 1013, "reason": "temporarily_unavailable"}]
    sent.clear()
    await app(ws_scope(token, denial=True), _receive_ws, _collect(sent))
    assert sent[0]["status"] == 503 and dict(sent[0]["headers"])[b"retry-after"].isdigit()
    assert inner.calls == []
