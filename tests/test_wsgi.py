"""The WSGI edge (``pat_middleware.wsgi.PATMiddleware``) around a plain WSGI app, through webtest.

Every row of DESIGN.md §6 that the middleware answers, against a real
SQLite store (and a real outage for the 503).
"""

from __future__ import annotations

import http.client
import json
import shutil
import threading
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
import webtest
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.serving import make_server as make_werkzeug_server

from pat_middleware import PATAuth, Policy, Principal
from pat_middleware.core.tokens import generate
from pat_middleware.wsgi import PATMiddleware
from tests.helpers import FAST_ARGON2, FakeClock
from tests.wsgi_fixtures import REALM, auth, make_auth, token  # noqa: F401 - fixtures, defined in this module's namespace

BARE = f'Bearer realm="{REALM}"'
INVALID_TOKEN = (
    f'Bearer realm="{REALM}", error="invalid_token", '
    'error_description="The access token is invalid, expired or revoked"'
)
INVALID_TOKEN_BODY = {"error": "invalid_token", "error_description": "The access token is invalid, expired or revoked"}


REQUIRED_BODY = {"error": "unauthorized", "error_description": "Authentication with a bearer token is required"}


class Recorder:
    """A WSGI app that records the principal of every request it is called for."""

    def __init__(self) -> None:
        self.seen: list[Principal | None] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        assert isinstance(environ["pat.auth"], PATAuth)
        principal = environ["pat.principal"]
        self.seen.append(principal)
        body = json.dumps({"user": principal.user_id if principal else None}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


def wrap(auth: PATAuth, **options: Any) -> tuple[webtest.TestApp, Recorder]:
    inner = Recorder()
    return webtest.TestApp(PATMiddleware(inner, auth, **options)), inner


def bearer(token: str, scheme: str = "Bearer") -> dict[str, str]:
    return {"Authorization": f"{scheme} {token}"}


def assert_rejected(response: webtest.TestResponse, challenge: str | None, body: dict[str, str]) -> None:
    """The exact RFC 6750 answer: challenge, JSON body, no caching; no expiry header unless a
    valid token was refused for its scopes (403)."""
    assert response.headers.get("WWW-Authenticate") == challenge
    assert response.content_type == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.json == body
    if response.status_int != 403:
        assert "PAT-Token-Expiration" not in response.headers


def assert_bare_challenge(response: webtest.TestResponse) -> None:
    assert_rejected(response, BARE, REQUIRED_BODY)


def assert_invalid_token(response: webtest.TestResponse) -> None:
    assert_rejected(response, INVALID_TOKEN, INVALID_TOKEN_BODY)


def assert_invalid_request(response: webtest.TestResponse, description: str) -> None:
    challenge = f'Bearer realm="{REALM}", error="invalid_request", error_description="{description}"'
    assert_rejected(response, challenge, {"error": "invalid_request", "error_description": description})


# -- anonymous and valid requests --------------------------------------------------
def test_anonymous_request_passes_through_with_no_principal(auth: PATAuth) -> None:
    app, inner = wrap(auth)
    response = app.get("/anything")
    assert response.json == {"user": None}
    assert inner.seen == [None]
    assert "PAT-Token-Expiration" not in response.headers


def test_valid_token_sets_the_principal_and_the_expiry_header(auth: PATAuth, token: str, clock: FakeClock) -> None:
    app, inner = wrap(auth)
    response = app.get("/repos", headers=bearer(token))
    assert response.json == {"user": "alice"}
    principal = inner.seen[0]
    assert principal is not None and principal.scopes == frozenset({"repo:read"})
    expected = (clock.datetime + timedelta(days=30)).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert response.headers["PAT-Token-Expiration"] == expected
    assert app.get("/repos", headers=bearer(token)).headers["PAT-Token-Expiration"] == expected  # cached path


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
def test_scheme_is_case_insensitive(auth: PATAuth, token: str, scheme: str) -> None:
    app, _ = wrap(auth)
    assert app.get("/", headers=bearer(token, scheme)).json == {"user": "alice"}


def test_other_schemes_are_not_bearer_credentials(auth: PATAuth) -> None:
    app, _ = wrap(auth)
    assert app.get("/", headers={"Authorization": "Basic YWxpY2U6cHc="}).json == {"user": None}
    required, _ = wrap(auth, required=True)
    response = required.get("/", headers={"Authorization": "Basic YWxpY2U6cHc="}, status=401)
    assert_bare_challenge(response)


def test_expiry_header_absent_for_a_token_that_never_expires(tmp_path: Path, clock: FakeClock) -> None:
    auth = make_auth(tmp_path / "t.db", clock, policy=Policy(require_expiry=False, max_lifetime=None))
    forever = auth.manager.create("bob", "forever", never_expires=True).token
    app, _ = wrap(auth)
    response = app.get("/", headers=bearer(forever))
    assert response.json == {"user": "bob"}
    assert "PAT-Token-Expiration" not in response.headers
    auth.close()


def test_expiry_header_can_be_renamed_or_turned_off(auth: PATAuth, token: str) -> None:
    renamed, _ = wrap(auth, expiry_header="X-Token-Expires")
    assert "X-Token-Expires" in renamed.get("/", headers=bearer(token)).headers
    silent, _ = wrap(auth, expiry_header=None)
    headers = silent.get("/", headers=bearer(token)).headers
    assert "PAT-Token-Expiration" not in headers and "X-Token-Expires" not in headers


# -- 401 without credentials -------------------------------------------------------
def test_required_without_credentials_is_a_bare_challenge(auth: PATAuth) -> None:
    app, inner = wrap(auth, required=True)
    response = app.get("/private", status=401)
    assert_bare_challenge(response)
    assert inner.seen == []


def test_exempt_paths_pass_anonymous_but_still_reject_bad_tokens(auth: PATAuth) -> None:
    app, inner = wrap(auth, required=True, exempt=["/health", "/public/"])
    assert app.get("/health").json == {"user": None}
    assert app.get("/health/db").json == {"user": None}
    assert app.get("/public/docs").json == {"user": None}
    app.get("/healthz", status=401)
    app.get("/private", status=401)
    bad, _ = generate()
    assert_invalid_token(app.get("/health", headers=bearer(bad), status=401))
    assert inner.seen == [None, None, None]


# -- 400 invalid_request -----------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "description"),
    [
        ("Bearer", "The Bearer credentials carry no token"),
        ("Bearer    ", "The Bearer credentials carry no token"),
        ("Bearer two words", "The Bearer token has characters RFC 6750 does not allow"),
        ('Bearer realm="x"', "The Bearer token has characters RFC 6750 does not allow"),
        ("Bearer tok\u00e9n", "The Bearer token has characters RFC 6750 does not allow"),
    ],
)
def test_malformed_header_is_invalid_request(auth: PATAuth, header: str, description: str) -> None:
    app, inner = wrap(auth)
    # webtest's lint wants latin-1 header values, as a WSGI server gives them
    environ = {"HTTP_AUTHORIZATION": header.encode().decode("latin-1")}
    response = app.get("/", extra_environ=environ, status=400)
    assert_invalid_request(response, description)
    assert inner.seen == []


@pytest.mark.parametrize("separator", [",", ", "])
@pytest.mark.parametrize("first", ["Bearer {token}", "Basic YWxpY2U6cHc=", "bearer {token}"])
def test_two_authorization_headers_joined_by_the_server_are_invalid_request(
    auth: PATAuth, token: str, separator: str, first: str
) -> None:
    # WSGI servers join repeated headers: werkzeug and wsgiref with ",", others with ", ".
    # Whatever the first header's scheme, a joined Bearer credential is two
    # headers (DESIGN §6: 400), as on the ASGI edge, which sees them apart.
    for options in ({}, {"allow_query_token": True}, {"required": True}):
        app, inner = wrap(auth, **options)
        joined = f"{first.format(token=token)}{separator}Bearer {token}"
        response = app.get("/", {"access_token": token}, extra_environ={"HTTP_AUTHORIZATION": joined}, status=400)
        assert_invalid_request(response, "Send exactly one Authorization header")
        assert inner.seen == []


def test_a_comma_in_another_scheme_is_not_taken_for_two_headers(auth: PATAuth) -> None:
    # Digest-style parameters carry commas; without a Bearer credential after one, it is not bearer: anonymous.
    app, inner = wrap(auth)
    digest = 'Digest username="alice", realm="api", nonce="abc", uri="/", response="ff"'
    assert app.get("/", extra_environ={"HTTP_AUTHORIZATION": digest}).json == {"user": None}
    assert inner.seen == [None]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize("server", ["werkzeug", "wsgiref"])
def test_two_authorization_headers_over_a_real_server_are_invalid_request(
    auth: PATAuth, token: str, server: str
) -> None:
    inner = Recorder()
    app = PATMiddleware(inner, auth)
    if server == "werkzeug":
        httpd: Any = make_werkzeug_server("127.0.0.1", 0, app)
    else:
        httpd = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", httpd.server_port, timeout=10)
        conn.putrequest("GET", "/")
        conn.putheader("Authorization", f"Bearer {token}")
        conn.putheader("Authorization", f"Bearer {token}")
        conn.endheaders()
        response = conn.getresponse()
        body = json.loads(response.read())
        conn.close()
        # one header alone is accepted, by the same server
        conn = http.client.HTTPConnection("127.0.0.1", httpd.server_port, timeout=10)
        conn.request("GET", "/", headers=bearer(token))
        single = conn.getresponse()
        single_body = json.loads(single.read())
        conn.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)
    assert response.status == 400
    assert response.headers["WWW-Authenticate"].startswith(f'Bearer realm="{REALM}", error="invalid_request"')
    assert body["error"] == "invalid_request"
    assert (single.status, single_body) == (200, {"user": "alice"})
    assert len(inner.seen) == 1


def test_token_in_header_and_query_is_invalid_request(auth: PATAuth, token: str) -> None:
    app, inner = wrap(auth, allow_query_token=True)
    description = "Present the token in exactly one place"
    response = app.get(f"/?access_token={token}", headers=bearer(token), status=400)
    assert_invalid_request(response, description)
    response = app.get(f"/?access_token={token}&access_token={token}", status=400)
    assert_invalid_request(response, description)
    assert inner.seen == []


# -- query tokens ------------------------------------------------------------------
def test_query_tokens_are_ignored_by_default(auth: PATAuth, token: str) -> None:
    app, _ = wrap(auth)
    assert app.get(f"/?access_token={token}").json == {"user": None}
    required, _ = wrap(auth, required=True)
    assert_bare_challenge(required.get(f"/?access_token={token}", status=401))


def test_query_tokens_when_allowed(auth: PATAuth, token: str) -> None:
    app, _ = wrap(auth, allow_query_token=True)
    assert app.get(f"/?page=2&access_token={token}").json == {"user": "alice"}
    bad, _ = generate()
    assert_invalid_token(app.get(f"/?access_token={bad}", status=401))
    description = "The access_token parameter is malformed"
    response = app.get("/?access_token=", status=400)
    assert_invalid_request(response, description)


# -- 401 invalid_token -------------------------------------------------------------
def _variants(token: str) -> dict[str, str]:
    record_id = token[4:16]
    wrong_secret, _ = generate(key_id=record_id)
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    return {
        "bad format": "pat_short",
        "other prefix": "ghp_" + token[4:],
        "bad checksum": flipped,
        "unknown": generate()[0],
        "wrong secret": wrong_secret,
    }


@pytest.mark.parametrize("case", ["bad format", "other prefix", "bad checksum", "unknown", "wrong secret"])
def test_invalid_tokens_get_the_exact_invalid_token_answer(auth: PATAuth, token: str, case: str) -> None:
    app, inner = wrap(auth)
    app.get("/", headers=bearer(token))  # the real token is verified and cached first
    presented = _variants(token)[case]
    response = app.get("/", headers=bearer(presented), status=401)
    assert_invalid_token(response)
    assert len(inner.seen) == 1
    assert token not in response.text and presented not in response.text


def test_expired_token(auth: PATAuth, clock: FakeClock) -> None:
    short = auth.manager.create("alice", "short", expires_in=timedelta(hours=1)).token
    app, inner = wrap(auth)
    assert app.get("/", headers=bearer(short)).json == {"user": "alice"}
    clock.advance(timedelta(hours=1, seconds=1))
    assert_invalid_token(app.get("/", headers=bearer(short), status=401))
    assert len(inner.seen) == 1


def test_revoked_token(auth: PATAuth, token: str) -> None:
    app, inner = wrap(auth)
    assert app.get("/", headers=bearer(token)).json == {"user": "alice"}
    auth.manager.revoke(token[4:16])
    assert_invalid_token(app.get("/", headers=bearer(token), status=401))
    assert len(inner.seen) == 1


def test_revoked_token_on_an_exempt_path_with_required(auth: PATAuth, token: str) -> None:
    app, inner = wrap(auth, required=True, exempt="/health")
    auth.manager.revoke(token[4:16])
    assert_invalid_token(app.get("/health", headers=bearer(token), status=401))
    assert inner.seen == []


# -- client address: CIDR allowlists and ProxyFix ------------------------------------
@pytest.fixture
def office_token(auth: PATAuth) -> str:
    return auth.manager.create("alice", "office", allowed_cidrs=["10.0.0.0/8"]).token


def test_cidr_allowlist_reads_remote_addr(auth: PATAuth, office_token: str) -> None:
    app, inner = wrap(auth)
    inside = app.get("/", headers=bearer(office_token), extra_environ={"REMOTE_ADDR": "10.1.2.3"})
    assert inside.json == {"user": "alice"}
    outside = app.get("/", headers=bearer(office_token), extra_environ={"REMOTE_ADDR": "192.0.2.7"}, status=401)
    assert_invalid_token(outside)
    assert len(inner.seen) == 1


def test_proxyfix_outside_the_middleware_sets_the_client_address(auth: PATAuth, office_token: str) -> None:
    inner = Recorder()
    proxy = {"REMOTE_ADDR": "127.0.0.1"}
    forwarded = {**bearer(office_token), "X-Forwarded-For": "10.9.9.9"}
    right = webtest.TestApp(ProxyFix(PATMiddleware(inner, auth), x_for=1))
    assert right.get("/", headers=forwarded, extra_environ=proxy).json == {"user": "alice"}
    # the wrong order: the middleware sees the proxy's address, not the client's
    wrong = webtest.TestApp(PATMiddleware(ProxyFix(inner, x_for=1), auth))
    wrong.get("/", headers=forwarded, extra_environ=proxy, status=401)
    assert len(inner.seen) == 1


# -- 503: a real outage of the store ---------------------------------------------------
def _assert_unavailable(response: webtest.TestResponse) -> None:
    assert response.status_int == 503
    assert "WWW-Authenticate" not in response.headers
    assert response.headers["Retry-After"] == "5"
    assert response.json["error"] == "temporarily_unavailable"
    assert response.headers["Cache-Control"] == "no-store"


def test_sqlite_store_whose_directory_is_gone_is_503(tmp_path: Path, clock: FakeClock) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    writer = make_auth(volume / "tokens.db", clock)
    token = writer.manager.create("alice", "ci").token
    writer.close()
    server = make_auth(volume / "tokens.db", clock)  # a fresh worker process, nothing cached
    shutil.rmtree(volume)  # the volume is gone: SQLite cannot open the file
    app, inner = wrap(server)
    _assert_unavailable(app.get("/", headers=bearer(token), status=503))
    assert inner.seen == []
    volume.mkdir()
    # anonymous requests need no store and still pass
    assert app.get("/").json == {"user": None}
    server.close()


def test_sqlalchemy_store_on_a_closed_port_is_503(clock: FakeClock) -> None:
    from pat_middleware import SQLAlchemyStore

    store = SQLAlchemyStore("postgresql+psycopg://postgres@127.0.0.1:1/test")
    auth = PATAuth(store, hasher=FAST_ARGON2, clock=clock, realm=REALM)
    app, inner = wrap(auth)
    _assert_unavailable(app.get("/", headers=bearer(generate()[0]), status=503))
    assert inner.seen == []
    auth.close()
