"""The token management REST API, through the Starlette mount and the Flask mount.

Every test runs against both frameworks (the ``client`` fixture), over a real
SQLite store, behind the library's own middleware. One test replays the same
script on both and expects identical answers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from pat_middleware import PATAuth, Policy, SQLiteStore
from pat_middleware.errors import InvalidToken
from pat_middleware.management.api import MAX_BODY, RECORD_FIELDS, ROUTES
from tests.helpers import FAST_ARGON2, FakeClock
from tests.management_apps import (
    API_APPS,
    BAD_SESSION_USERS,
    FRAMEWORKS,
    NO_SESSION_USERS,
    SessionUser,
    client_for,
    session_user_site,
)

#: The shared fixtures ``auth`` (real SQLite store, on the ``clock`` of conftest) and ``framework``,
#: imported (not ``pytest_plugins``, which would make them global and let another module's ``auth`` win).
from tests.management_fixtures import auth, framework  # noqa: F401 - fixtures, defined in this module's namespace

ALICE = {"X-User": "alice"}
BOB = {"X-User": "bob"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def client(framework: str, auth: PATAuth) -> Iterator[httpx.Client]:
    with client_for(API_APPS[framework](auth)) as client:
        yield client


def create(client: httpx.Client, headers: dict[str, str] = ALICE, **body: Any) -> httpx.Response:
    body.setdefault("name", "ci")
    return client.post("/api/tokens", json=body, headers=headers)


def created(client: httpx.Client, headers: dict[str, str] = ALICE, **body: Any) -> tuple[str, str]:
    """(plaintext, id) of a new token."""
    answer = create(client, headers, **body)
    assert answer.status_code == 201, answer.text
    return answer.json()["token"], answer.json()["record"]["id"]


def ascii_json(body: Any) -> bytes:
    """JSON with every non-ASCII character escaped: how a lone surrogate can be sent at all."""
    return json.dumps(body).encode()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(answer: httpx.Response, status: int, error: str, field: str | None = None) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["cache-control"] == "no-store"
    body: dict[str, Any] = answer.json()
    assert body["error"] == error
    assert isinstance(body["error_description"], str) and body["error_description"]
    assert body.get("field") == field
    return body


# -- who may call -----------------------------------------------------------------------
ROUTE_CALLS = [
    ("GET", "/api/tokens"),
    ("POST", "/api/tokens"),
    ("GET", "/api/tokens/AAAAAAAAAAAA"),
    ("PATCH", "/api/tokens/AAAAAAAAAAAA"),
    ("DELETE", "/api/tokens/AAAAAAAAAAAA"),
    ("POST", "/api/tokens/AAAAAAAAAAAA/rotate"),
    ("GET", "/api/log"),
]


def test_route_calls_cover_every_route() -> None:
    templates = {(r.method, "/api" + r.template.replace("{token_id}", "AAAAAAAAAAAA")) for r in ROUTES}
    assert templates == set(ROUTE_CALLS)


@pytest.mark.parametrize(("method", "path"), ROUTE_CALLS)
def test_every_route_needs_a_user(client: httpx.Client, method: str, path: str) -> None:
    answer = client.request(method, path, json={})
    assert_error(answer, 401, "unauthorized")
    assert answer.headers["www-authenticate"] == 'Bearer realm="api"'


@pytest.mark.parametrize(("method", "path"), ROUTE_CALLS)
def test_a_token_without_the_manage_scope_gets_403_on_every_route(
    client: httpx.Client, auth: PATAuth, method: str, path: str
) -> None:
    token = auth.manager.create("alice", "reader", ["repo:read"]).token
    answer = client.request(method, path, json={}, headers=bearer(token))
    assert_error(answer, 403, "insufficient_scope")
    assert 'error="insufficient_scope"' in answer.headers["www-authenticate"]
    assert 'scope="tokens:manage"' in answer.headers["www-authenticate"]


def test_a_token_with_the_manage_scope_manages_its_users_tokens(client: httpx.Client, auth: PATAuth) -> None:
    manager = auth.manager.create("alice", "automation", ["tokens:manage"]).token
    answer = client.post("/api/tokens", json={"name": "made by a token"}, headers=bearer(manager))
    assert answer.status_code == 201
    listed = client.get("/api/tokens", headers=bearer(manager)).json()["tokens"]
    assert sorted(r["name"] for r in listed) == ["automation", "made by a token"]
    assert auth.manager.get(answer.json()["record"]["id"]).user_id == "alice"


def test_the_token_wins_over_the_session(client: httpx.Client, auth: PATAuth) -> None:
    """A request with bob's managing token and alice's session acts for bob, never alice."""
    bobs = auth.manager.create("bob", "bob-manage", ["tokens:manage"]).token
    created(client, ALICE, name="alice-only")
    listed = client.get("/api/tokens", headers={**ALICE, **bearer(bobs)}).json()["tokens"]
    assert [r["name"] for r in listed] == ["bob-manage"]
    # and a token without the scope is refused even with a session
    reader = auth.manager.create("alice", "reader", ["repo:read"]).token
    assert client.get("/api/tokens", headers={**ALICE, **bearer(reader)}).status_code == 403


@pytest.mark.parametrize("user", BAD_SESSION_USERS, ids=repr)
def test_a_session_user_no_token_can_belong_to_is_422_on_every_route(
    framework: str, auth: PATAuth, user: object, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever the host's ``current_user`` returns, every route answers; one that
    ``check_user_id`` refuses (or that is not a string) is a 422 before any route runs."""
    alices = auth.manager.create("alice", "automation", ["tokens:manage"]).token
    with client_for(session_user_site(framework, auth, SessionUser(user))) as client:
        for method, path in ROUTE_CALLS:
            body = assert_error(client.request(method, path, json={}), 422, "policy_violation", "user_id")
            assert body["error_description"].startswith("The logged-in user's id cannot own tokens: ")
        assert client.get("/api/openapi.json").status_code == 200
        assert_error(client.get("/api/nowhere"), 404, "not_found")
        # a token with the management scope acts for its own user, whatever the session says
        listed = client.get("/api/tokens", headers=bearer(alices))
        assert [r["name"] for r in listed.json()["tokens"]] == ["automation"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("user", BAD_SESSION_USERS[:3])
def test_an_async_current_user_is_checked_the_same(auth: PATAuth, user: object) -> None:
    with client_for(session_user_site("starlette", auth, SessionUser(user, awaitable=True))) as client:
        assert_error(client.get("/api/tokens"), 422, "policy_violation", "user_id")


@pytest.mark.parametrize("user", NO_SESSION_USERS, ids=repr)
def test_no_session_user_is_nobody(framework: str, auth: PATAuth, user: object) -> None:
    with client_for(session_user_site(framework, auth, SessionUser(user))) as client:
        for method, path in ROUTE_CALLS:
            assert_error(client.request(method, path, json={}), 401, "unauthorized")


def test_an_invalid_token_is_rejected_before_the_api(client: httpx.Client) -> None:
    answer = client.get("/api/tokens", headers={**ALICE, **bearer("pat_" + "A" * 50)})
    assert answer.status_code == 401
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]


# -- create -----------------------------------------------------------------------------
def test_create_returns_the_token_once_with_its_record(client: httpx.Client, auth: PATAuth, clock: FakeClock) -> None:
    answer = create(
        client,
        name="deploy",
        description="CI deploys",
        scopes=["repo:write", "repo:read", "repo:read"],
        expires_in_days=30,
        allowed_cidrs=["10.0.0.1/8"],
    )
    assert answer.status_code == 201
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert set(body) == {"token", "record"}
    record = body["record"]
    assert tuple(record) == RECORD_FIELDS
    assert answer.headers["location"] == f"/api/tokens/{record['id']}"
    assert record["name"] == "deploy"
    assert record["description"] == "CI deploys"
    assert record["scopes"] == ["repo:read", "repo:write"]
    assert record["allowed_cidrs"] == ["10.0.0.0/8"]
    assert record["state"] == "active"
    assert record["created_at"] == clock.datetime.isoformat()
    assert record["expires_at"] == (clock.datetime + timedelta(days=30)).isoformat()
    assert record["last_used_at"] is None and record["revoked_at"] is None
    assert body["token"].startswith(f"pat_{record['id']}")
    stored = auth.manager.get(record["id"])
    assert stored.user_id == "alice" and stored.hash not in answer.text
    assert auth.verify(body["token"], client_ip="10.1.2.3").user_id == "alice"


def test_create_with_an_explicit_expiry(client: httpx.Client, clock: FakeClock) -> None:
    when = (clock.datetime + timedelta(days=3)).replace(microsecond=0)
    answer = create(client, expires_at=when.isoformat().replace("+00:00", "Z"))
    assert answer.status_code == 201
    assert answer.json()["record"]["expires_at"] == when.isoformat()
    offset = when.astimezone(tz=None).isoformat()  # any offset is accepted and stored as UTC
    again = create(client, name="other", expires_at=offset)
    assert again.json()["record"]["expires_at"] == when.isoformat()


def test_create_without_expiry_gets_the_policy_default(client: httpx.Client, clock: FakeClock) -> None:
    record = create(client).json()["record"]
    assert record["expires_at"] == (clock.datetime + timedelta(days=30)).isoformat()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": 5}, "name"),
        ({"name": "x", "colour": "red"}, "colour"),
        ({"name": "x", "scopes": "repo:read"}, "scopes"),
        ({"name": "x", "scopes": [1]}, "scopes"),
        ({"name": "x", "scopes": ["s"] * 101}, "scopes"),
        ({"name": "x", "description": None}, "description"),
        ({"name": "x", "expires_in_days": 0}, "expires_in_days"),
        ({"name": "x", "expires_in_days": True}, "expires_in_days"),
        ({"name": "x", "expires_in_days": "3"}, "expires_in_days"),
        ({"name": "x", "expires_in_days": 1.5}, "expires_in_days"),
        ({"name": "x", "expires_in_days": 10**12}, "expires_in_days"),
        ({"name": "x", "expires_at": "2026-03-01"}, "expires_at"),
        ({"name": "x", "expires_at": "2026-03-01T00:00:00"}, "expires_at"),
        ({"name": "x", "expires_at": "2026-02-30T00:00:00Z"}, "expires_at"),
        ({"name": "x", "expires_at": 1767225600}, "expires_at"),
        ({"name": "x", "never_expires": "yes"}, "never_expires"),
        ({"name": "x", "allowed_cidrs": "10.0.0.0/8"}, "allowed_cidrs"),
    ],
)
def test_create_validation_errors(client: httpx.Client, body: dict[str, Any], field: str) -> None:
    assert_error(client.post("/api/tokens", json=body, headers=ALICE), 422, "validation_error", field)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "tab\there"}, "name"),
        ({"name": "x", "scopes": ["bad scope"]}, "scopes"),
        ({"name": "x", "scopes": ['quo"te']}, "scopes"),
        ({"name": "x", "description": "d" * 1001}, "description"),
        ({"name": "x", "expires_at": "2025-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "x", "expires_in_days": 367}, "expires_at"),
        ({"name": "x", "never_expires": True}, "expires_at"),
        ({"name": "x", "expires_in_days": 5, "expires_at": "2026-01-03T00:00:00Z"}, "expires_at"),
        ({"name": "x", "allowed_cidrs": ["10.0.0.0/33"]}, "allowed_cidrs"),
    ],
)
def test_create_policy_violations(client: httpx.Client, body: dict[str, Any], field: str) -> None:
    assert_error(client.post("/api/tokens", json=body, headers=ALICE), 422, "policy_violation", field)


def test_create_respects_allowed_scopes(auth: PATAuth, framework: str, tmp_path: Any) -> None:
    strict = PATAuth(SQLiteStore(tmp_path / "strict.db"), hasher=FAST_ARGON2, policy=Policy(allowed_scopes={"repo:*"}))
    try:
        with client_for(API_APPS[framework](strict)) as client:
            assert create(client, scopes=["repo:read"]).status_code == 201
            denied = create(client, name="admin", scopes=["admin"])
            body = assert_error(denied, 422, "policy_violation", "scopes")
            assert "admin" in body["error_description"]
    finally:
        strict.close()


def test_create_a_taken_name_is_409(client: httpx.Client) -> None:
    created(client, name="ci")
    assert_error(create(client, name="ci"), 409, "name_taken", "name")
    assert create(client, BOB, name="ci").status_code == 201  # names are per user


def test_create_counts_live_tokens(auth: PATAuth, framework: str, tmp_path: Any) -> None:
    small = PATAuth(SQLiteStore(tmp_path / "small.db"), hasher=FAST_ARGON2, policy=Policy(max_tokens_per_user=1))
    try:
        with client_for(API_APPS[framework](small)) as client:
            created(client, name="one")
            assert_error(create(client, name="two"), 422, "policy_violation", "name")
    finally:
        small.close()


@pytest.mark.parametrize(
    ("content", "content_type", "status", "error"),
    [
        (b'{"name": "x"', "application/json", 400, "invalid_json"),
        (b'{"name": "x", "name": "y"}', "application/json", 400, "invalid_json"),
        (b'{"name": "x", "expires_in_days": NaN}', "application/json", 400, "invalid_json"),
        (b'{"name": "\xff"}', "application/json", 400, "invalid_json"),
        (b"[" * 100_00 + b"]" * 100_00, "application/json", 400, "invalid_json"),
        (b'["name"]', "application/json", 422, "validation_error"),
        (b'"x"', "application/json", 422, "validation_error"),
        (b"name=x", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b'{"name": "x"}', "text/plain", 415, "unsupported_media_type"),
        (b'{"name": "x"}', None, 415, "unsupported_media_type"),
        (b'{"name": "' + b"x" * MAX_BODY + b'"}', "application/json", 413, "payload_too_large"),
    ],
)
def test_create_bad_bodies(
    client: httpx.Client, content: bytes, content_type: str | None, status: int, error: str
) -> None:
    headers = dict(ALICE)
    if content_type:
        headers["Content-Type"] = content_type
    assert_error(client.post("/api/tokens", content=content, headers=headers), status, error)


def test_json_with_a_charset_is_accepted(client: httpx.Client) -> None:
    headers = {**ALICE, "Content-Type": "application/json; charset=utf-8"}
    assert client.post("/api/tokens", content=b'{"name": "ci"}', headers=headers).status_code == 201


# -- list / get ---------------------------------------------------------------------------
def test_list_filters_by_state(client: httpx.Client, auth: PATAuth, clock: FakeClock) -> None:
    _, short = created(client, name="short", expires_in_days=1)
    _, live = created(client, name="live", expires_in_days=10)
    _, gone = created(client, name="gone")
    assert client.delete(f"/api/tokens/{gone}", headers=ALICE).status_code == 204
    clock.advance(timedelta(days=2))

    def names(query: str) -> list[str]:
        answer = client.get(f"/api/tokens{query}", headers=ALICE)
        assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
        return [r["name"] for r in answer.json()["tokens"]]

    assert names("") == ["live"]
    assert names("?state=active") == ["live"]
    assert names("?state=expired") == ["short"]
    assert names("?state=revoked") == ["gone"]
    assert sorted(names("?state=inactive")) == ["gone", "short"]
    assert sorted(names("?state=all")) == ["gone", "live", "short"]
    assert live and short


@pytest.mark.parametrize("query", ["?state=bogus", "?state=", "?state=all&state=active"])
def test_list_bad_state(client: httpx.Client, query: str) -> None:
    assert_error(client.get(f"/api/tokens{query}", headers=ALICE), 422, "validation_error", "state")


def test_get_one(client: httpx.Client) -> None:
    _, token_id = created(client, name="mine", scopes=["repo:read"])
    answer = client.get(f"/api/tokens/{token_id}", headers=ALICE)
    assert answer.status_code == 200
    assert answer.json()["name"] == "mine" and tuple(answer.json()) == RECORD_FIELDS


@pytest.mark.parametrize("token_id", ["AAAAAAAAAAAA", "short", "pat_AAAAAAAAAAAAAAAAAAAAAA", "%00", "A" * 200])
def test_unknown_ids_are_404(client: httpx.Client, token_id: str) -> None:
    for method, path in [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/rotate")]:
        answer = client.request(method, f"/api/tokens/{token_id}{path}", json={}, headers=ALICE)
        body = assert_error(answer, 404, "not_found")
        assert body["error_description"] == "No such token"
        assert token_id not in answer.text


def test_other_users_tokens_are_404_and_untouched(client: httpx.Client, auth: PATAuth) -> None:
    token, token_id = created(client, BOB, name="bobs")
    unknown = client.get("/api/tokens/AAAAAAAAAAAA", headers=ALICE)
    calls = [
        ("GET", "", None),
        ("PATCH", "", {"name": "stolen"}),
        ("DELETE", "", None),
        ("POST", "/rotate", {}),
    ]
    for method, suffix, body in calls:
        answer = client.request(method, f"/api/tokens/{token_id}{suffix}", json=body, headers=ALICE)
        assert answer.status_code == 404
        assert answer.json() == unknown.json()  # no existence leak
    assert client.get("/api/tokens?state=all", headers=ALICE).json() == {"tokens": []}
    record = auth.manager.get(token_id)
    assert record.name == "bobs" and record.revoked_at is None
    assert auth.verify(token).user_id == "bob"


# -- show once --------------------------------------------------------------------------
def test_the_plaintext_is_shown_only_by_create_and_rotate(client: httpx.Client, auth: PATAuth) -> None:
    first = create(client, name="once")
    token, token_id = first.json()["token"], first.json()["record"]["id"]
    secret = token[len("pat_") + 12 : -6]
    rotated = client.post(f"/api/tokens/{token_id}/rotate", json={"grace_seconds": 60}, headers=ALICE)
    new_token, new_id = rotated.json()["token"], rotated.json()["record"]["id"]
    assert rotated.status_code == 201 and new_token != token
    new_secret = new_token[len("pat_") + 12 : -6]
    manager = auth.manager.create("alice", "manager", ["tokens:manage"]).token
    answers = [
        client.get("/api/tokens?state=all", headers=ALICE),
        client.get(f"/api/tokens/{token_id}", headers=ALICE),
        client.get(f"/api/tokens/{new_id}", headers=ALICE),
        client.patch(f"/api/tokens/{new_id}", json={"description": "d"}, headers=ALICE),
        client.get("/api/tokens?state=all", headers=bearer(manager)),
        client.delete(f"/api/tokens/{token_id}", headers=ALICE),
        client.get("/api/openapi.json"),
    ]
    for answer in answers:
        assert answer.status_code < 300
        for secret_part in (secret, new_secret):
            assert secret_part not in answer.text
    assert "hash" not in json.dumps(answers[0].json())
    assert auth.manager.get(new_id).hash not in answers[0].text


# -- update -----------------------------------------------------------------------------
def test_patch_renames_and_changes_expiry_and_description(client: httpx.Client, clock: FakeClock) -> None:
    _, token_id = created(client, name="old")
    answer = client.patch(
        f"/api/tokens/{token_id}",
        json={"name": "new", "description": "now documented", "expires_in_days": 7, "allowed_cidrs": ["::1/128"]},
        headers=ALICE,
    )
    assert answer.status_code == 200, answer.text
    record = answer.json()
    assert record["name"] == "new" and record["description"] == "now documented"
    assert record["expires_at"] == (clock.datetime + timedelta(days=7)).isoformat()
    assert record["allowed_cidrs"] == ["::1/128"]
    at = datetime(2026, 2, 1, tzinfo=UTC)
    again = client.patch(f"/api/tokens/{token_id}", json={"expires_at": "2026-02-01T00:00:00Z"}, headers=ALICE)
    assert again.json()["expires_at"] == at.isoformat()
    assert client.patch(f"/api/tokens/{token_id}", json={}, headers=ALICE).json() == again.json()


def test_patch_errors(client: httpx.Client) -> None:
    _, token_id = created(client, name="a")
    created(client, name="b")
    path = f"/api/tokens/{token_id}"
    assert_error(client.patch(path, json={"name": "b"}, headers=ALICE), 409, "name_taken", "name")
    assert_error(client.patch(path, json={"scopes": ["x"]}, headers=ALICE), 422, "validation_error", "scopes")
    assert_error(client.patch(path, json={"name": ""}, headers=ALICE), 422, "policy_violation", "name")
    too_far = {"name": "renamed", "expires_in_days": 1000}
    assert_error(client.patch(path, json=too_far, headers=ALICE), 422, "policy_violation", "expires_at")
    assert client.get(path, headers=ALICE).json()["name"] == "a"  # nothing applied
    assert_error(client.patch(path, content=b"name=x", headers=ALICE), 415, "unsupported_media_type")
    assert_error(client.patch(path, content=b"{", headers={**ALICE, **JSON}), 400, "invalid_json")
    client.delete(path, headers=ALICE)
    assert_error(client.patch(path, json={"name": "z"}, headers=ALICE), 409, "token_revoked")


def test_a_refused_patch_changes_nothing(client: httpx.Client, auth: PATAuth, clock: FakeClock) -> None:
    """Every change of a PATCH is written at once: a refused expiry leaves the name too."""
    _, expired_id = created(client, name="short", expires_at=(clock.datetime + timedelta(seconds=1)).isoformat())
    clock.advance(timedelta(seconds=2))
    path = f"/api/tokens/{expired_id}"
    refused = client.patch(path, json={"name": "renamed", "expires_in_days": 5}, headers=ALICE)
    assert_error(refused, 422, "policy_violation", "expires_at")
    assert client.get(path, headers=ALICE).json()["name"] == "short"
    # max_lifetime counts from creation: 366 days from now passes a "from now" check, not this one
    _, old_id = created(client, name="old")
    clock.advance(timedelta(days=10))
    path = f"/api/tokens/{old_id}"
    refused = client.patch(path, json={"name": "n2", "expires_in_days": 360}, headers=ALICE)
    assert_error(refused, 422, "policy_violation", "expires_at")
    assert client.get(path, headers=ALICE).json()["name"] == "old"
    before = auth.manager.get(old_id)
    bad_text = client.patch(
        path, content=ascii_json({"name": "n3", "description": "\ud800"}), headers={**ALICE, **JSON}
    )
    assert_error(bad_text, 422, "policy_violation", "description")
    assert auth.manager.get(old_id) == before


@pytest.mark.parametrize("text", ["\ud800", "a\u0000b", "bell\u0007"])
def test_descriptions_no_store_can_keep_are_422_not_503(client: httpx.Client, text: str) -> None:
    posted = client.post(
        "/api/tokens", content=ascii_json({"name": "d", "description": text}), headers={**ALICE, **JSON}
    )
    assert_error(posted, 422, "policy_violation", "description")
    _, token_id = created(client, name="described", description="line one\n\tline two\r\n")
    patch = client.patch(
        f"/api/tokens/{token_id}", content=ascii_json({"description": text}), headers={**ALICE, **JSON}
    )
    assert_error(patch, 422, "policy_violation", "description")


def test_a_token_hands_out_only_scopes_it_holds(client: httpx.Client, auth: PATAuth) -> None:
    """Like GitLab, a managing token cannot mint or rotate into more than it has itself."""
    manager = auth.manager.create("alice", "automation", ["tokens:manage", "repo:*"]).token
    ok = client.post("/api/tokens", json={"name": "sub", "scopes": ["repo:read"]}, headers=bearer(manager))
    assert ok.status_code == 201, ok.text
    wider = client.post("/api/tokens", json={"name": "x", "scopes": ["repo:read", "admin"]}, headers=bearer(manager))
    body = assert_error(wider, 403, "insufficient_scope")
    assert 'scope="admin"' in wider.headers["www-authenticate"]
    assert "admin" in body["error_description"]
    admin_id = auth.manager.create("alice", "admin token", ["admin"]).record.id
    rotated = client.post(f"/api/tokens/{admin_id}/rotate", json={}, headers=bearer(manager))
    assert_error(rotated, 403, "insufficient_scope")
    assert auth.manager.get(admin_id).revoked_at is None  # nothing rotated
    names = sorted(r.name for r in auth.manager.list("alice"))
    assert names == ["admin token", "automation", "sub"]
    assert auth.manager.get(admin_id).allowed_cidrs == ()
    loosen = {"allowed_cidrs": [], "expires_in_days": 300}
    assert_error(
        client.patch(f"/api/tokens/{admin_id}", json=loosen, headers=bearer(manager)), 403, "insufficient_scope"
    )
    assert auth.manager.get(admin_id).revoked_at is None
    assert client.delete(f"/api/tokens/{admin_id}", headers=bearer(manager)).status_code == 204  # taking away is fine
    admin_id = auth.manager.create("alice", "admin again", ["admin"]).record.id
    # the logged-in user (session) is not limited by any token
    assert client.post(f"/api/tokens/{admin_id}/rotate", json={}, headers=ALICE).status_code == 201
    assert create(client, name="admin 2", scopes=["admin"]).status_code == 201


def test_resources_in_create_update_and_records(client: httpx.Client, auth: PATAuth) -> None:
    answer = create(client, name="web", scopes=["repo:read"], resources=["acme/web", "acme/web", "tools/*"])
    assert answer.status_code == 201, answer.text
    record = answer.json()["record"]
    assert record["resources"] == ["acme/web", "tools/*"]
    token_id = record["id"]
    assert client.get(f"/api/tokens/{token_id}", headers=ALICE).json()["resources"] == ["acme/web", "tools/*"]
    narrowed = client.patch(f"/api/tokens/{token_id}", json={"resources": ["acme/web"]}, headers=ALICE)
    assert narrowed.status_code == 200 and narrowed.json()["resources"] == ["acme/web"]
    widened = client.patch(f"/api/tokens/{token_id}", json={"resources": None}, headers=ALICE)
    assert widened.status_code == 200 and widened.json()["resources"] is None  # a session may widen
    rotated = client.post(f"/api/tokens/{token_id}/rotate", json={}, headers=ALICE)
    assert rotated.json()["record"]["resources"] is None
    assert create(client, name="all").json()["record"]["resources"] is None  # the default: every resource
    listed = client.get("/api/tokens", headers=ALICE).json()["tokens"]
    assert all("resources" in r for r in listed)


@pytest.mark.parametrize(
    "resources",
    [[], ["acme web"], ["*"], ["acme/*/x"], "acme/web", [1], ["x" * 256], [f"r{i}" for i in range(101)]],
)
def test_bad_resources_are_422_naming_the_field(client: httpx.Client, resources: Any) -> None:
    answer = create(client, name="bad", resources=resources)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] in ("validation_error", "policy_violation")  # the shape, or the policy
    assert answer.json()["field"] == "resources"


def test_policy_allowed_resources_through_the_api(client: httpx.Client, auth: PATAuth) -> None:
    object.__setattr__(auth.policy, "allowed_resources", lambda user: ["acme/*"])
    assert create(client, name="ok", resources=["acme/web"]).status_code == 201
    body = assert_error(create(client, name="no", resources=["other/x"]), 422, "policy_violation", "resources")
    assert "other/x" in body["error_description"]


def test_a_token_hands_out_only_resources_it_covers(client: httpx.Client, auth: PATAuth) -> None:
    manager = auth.manager.create("alice", "automation", ["tokens:manage", "repo:*"], resources=["acme/*"]).token
    ok = create(client, bearer(manager), name="sub", scopes=["repo:read"], resources=["acme/web"])
    assert ok.status_code == 201, ok.text
    for resources in (None, ["other/x"], ["acme/web", "other/x"]):
        refused = create(client, bearer(manager), name="wider", resources=resources)
        body = assert_error(refused, 403, "insufficient_scope")
        assert "resources" in body["error_description"] and "other" not in body["error_description"]
    unrestricted_default = create(client, bearer(manager), name="all")  # resources omitted: every resource
    assert_error(unrestricted_default, 403, "insufficient_scope")
    sub_id = ok.json()["record"]["id"]
    wider = client.patch(f"/api/tokens/{sub_id}", json={"resources": ["other/x"]}, headers=bearer(manager))
    assert_error(wider, 403, "insufficient_scope")
    narrower = client.patch(f"/api/tokens/{sub_id}", json={"resources": ["acme/web/wiki"]}, headers=bearer(manager))
    assert narrower.status_code == 200 and narrower.json()["resources"] == ["acme/web/wiki"]
    everything_id = auth.manager.create("alice", "everything", ["repo:read"]).record.id
    for attempt in (
        client.post(f"/api/tokens/{everything_id}/rotate", json={}, headers=bearer(manager)),
        client.patch(f"/api/tokens/{everything_id}", json={"name": "renamed"}, headers=bearer(manager)),
    ):
        assert_error(attempt, 403, "insufficient_scope")
    assert auth.manager.get(everything_id).revoked_at is None and auth.manager.get(everything_id).name == "everything"
    assert client.delete(f"/api/tokens/{everything_id}", headers=bearer(manager)).status_code == 204


# -- revoke -----------------------------------------------------------------------------
def test_delete_revokes_and_the_token_stops_working(client: httpx.Client, auth: PATAuth) -> None:
    token, token_id = created(client, name="doomed")
    assert client.get("/whoami", headers=bearer(token)).text == "alice"
    answer = client.delete(f"/api/tokens/{token_id}", headers=ALICE)
    assert answer.status_code == 204 and answer.content == b""
    assert "content-type" not in answer.headers
    assert client.get("/whoami", headers=bearer(token)).status_code == 401
    with pytest.raises(InvalidToken):
        auth.verify(token)
    assert client.get(f"/api/tokens/{token_id}", headers=ALICE).json()["state"] == "revoked"
    assert client.delete(f"/api/tokens/{token_id}", headers=ALICE).status_code == 204  # idempotent


def test_a_token_can_revoke_itself(client: httpx.Client, auth: PATAuth) -> None:
    new = auth.manager.create("alice", "self", ["tokens:manage"])
    assert client.delete(f"/api/tokens/{new.record.id}", headers=bearer(new.token)).status_code == 204
    assert client.get("/api/tokens", headers=bearer(new.token)).status_code == 401


# -- rotate -----------------------------------------------------------------------------
def test_rotate_replaces_the_secret(client: httpx.Client, auth: PATAuth, clock: FakeClock) -> None:
    token, token_id = created(client, name="rotating", scopes=["repo:read"], expires_in_days=10)
    clock.advance(timedelta(days=1))
    answer = client.post(f"/api/tokens/{token_id}/rotate", json={}, headers=ALICE)
    assert answer.status_code == 201 and answer.headers["cache-control"] == "no-store"
    body = answer.json()
    record = body["record"]
    assert answer.headers["location"] == f"/api/tokens/{record['id']}"
    assert record["name"] == "rotating" and record["scopes"] == ["repo:read"]
    assert record["rotated_from"] == token_id
    assert record["expires_at"] == (clock.datetime + timedelta(days=10)).isoformat()
    assert auth.verify(body["token"]).user_id == "alice"
    with pytest.raises(InvalidToken):
        auth.verify(token)


def test_rotate_with_grace_and_lifetime(client: httpx.Client, auth: PATAuth, clock: FakeClock) -> None:
    token, token_id = created(client, name="graceful")
    answer = client.post(
        f"/api/tokens/{token_id}/rotate", json={"grace_seconds": 3600, "expires_in_days": 2}, headers=ALICE
    )
    assert answer.json()["record"]["expires_at"] == (clock.datetime + timedelta(days=2)).isoformat()
    assert auth.verify(token).user_id == "alice"  # still valid during the grace period
    clock.advance(timedelta(seconds=3601))
    with pytest.raises(InvalidToken):
        auth.verify(token)


def test_a_token_in_its_grace_reads_rotated(client: httpx.Client, clock: FakeClock) -> None:
    _, token_id = created(client, name="deploy")
    client.post(f"/api/tokens/{token_id}/rotate", json={"grace_seconds": 3600}, headers=ALICE)
    old = client.get(f"/api/tokens/{token_id}", headers=ALICE).json()
    assert old["state"] == "rotated"
    assert old["revoked_at"] == (clock.datetime + timedelta(hours=1)).isoformat()  # the grace's end
    listed = client.get("/api/tokens", headers=ALICE).json()["tokens"]
    assert sorted(t["state"] for t in listed if t["name"] == "deploy") == ["active", "rotated"]
    only = client.get("/api/tokens?state=rotated", headers=ALICE).json()["tokens"]
    assert [t["id"] for t in only] == [token_id]


def test_rotate_errors(client: httpx.Client, auth: PATAuth) -> None:
    _, token_id = created(client, name="r")
    path = f"/api/tokens/{token_id}/rotate"
    assert_error(client.post(path, headers=ALICE), 415, "unsupported_media_type")
    assert_error(client.post(path, json={"grace_seconds": -1}, headers=ALICE), 422, "validation_error", "grace_seconds")
    week = 7 * 24 * 3600
    assert_error(
        client.post(path, json={"grace_seconds": week + 1}, headers=ALICE), 422, "validation_error", "grace_seconds"
    )
    assert_error(client.post(path, json={"scopes": []}, headers=ALICE), 422, "validation_error", "scopes")
    assert_error(client.post(path, json={"expires_in_days": 400}, headers=ALICE), 422, "policy_violation", "expires_at")
    new = client.post(path, json={}, headers=ALICE).json()
    # rotating the old (now revoked) token again is reuse: the whole family is revoked
    body = assert_error(client.post(path, json={}, headers=ALICE), 409, "token_revoked")
    assert "family" in body["error_description"]
    assert auth.manager.get(new["record"]["id"]).revoked_at is not None
    with pytest.raises(InvalidToken):
        auth.verify(new["token"])


# -- routing, store outages ----------------------------------------------------------------
def test_unknown_routes_and_methods(client: httpx.Client) -> None:
    assert_error(client.get("/api/nothing", headers=ALICE), 404, "not_found")
    assert_error(client.get("/api/tokens/AAAAAAAAAAAA/extra", headers=ALICE), 404, "not_found")
    assert_error(client.get("/api//tokens", headers=ALICE), 404, "not_found")  # JSON on both, no redirect
    answer = client.put("/api/tokens", json={}, headers=ALICE)
    assert_error(answer, 405, "method_not_allowed")
    assert answer.headers["allow"] == "GET, POST, HEAD"
    answer = client.request("OPTIONS", "/api/tokens/AAAAAAAAAAAA/rotate", headers=ALICE)
    assert_error(answer, 405, "method_not_allowed")
    assert answer.headers["allow"] == "POST"
    assert client.head("/api/tokens", headers=ALICE).status_code == 200
    for method in ("TRACE", "CONNECT"):  # JSON on both frameworks, not a server's HTML page
        answer = client.request(method, "/api/tokens", headers=ALICE)
        assert_error(answer, 405, "method_not_allowed")
        assert answer.headers["allow"] == "GET, POST, HEAD"


def test_store_down_is_503_with_retry_after(framework: str, tmp_path: Any) -> None:
    # A real SQLite store whose file cannot be opened: every call fails.
    broken = PATAuth(SQLiteStore(tmp_path / "missing-dir" / "tokens.db"), hasher=FAST_ARGON2)
    try:
        with client_for(API_APPS[framework](broken)) as client:
            for answer in [
                client.get("/api/tokens", headers=ALICE),
                create(client),
                client.get("/api/tokens/AAAAAAAAAAAA", headers=ALICE),
                client.delete("/api/tokens/AAAAAAAAAAAA", headers=ALICE),
            ]:
                assert_error(answer, 503, "temporarily_unavailable")
                assert answer.headers["retry-after"] == "5"
    finally:
        broken.close()


def test_openapi_document(client: httpx.Client) -> None:
    answer = client.get("/api/openapi.json")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    document = answer.json()
    assert document["openapi"] == "3.1.0"
    assert document["servers"] == [{"url": "/api"}]
    operations = {(m.upper(), p) for p, item in document["paths"].items() for m in item}
    assert operations == {(r.method, r.template) for r in ROUTES}
    schemas = document["components"]["schemas"]
    assert schemas["TokenRecord"]["properties"]["resources"]["type"] == ["array", "null"]
    for body in ("CreateToken", "UpdateToken"):
        resources = schemas[body]["properties"]["resources"]
        assert resources["type"] == ["array", "null"] and resources["minItems"] == 1
        assert resources["items"]["maxLength"] == 255 and resources["items"]["pattern"].endswith(r"(?:[/:]\*)?$")
    validator = pytest.importorskip("openapi_spec_validator", reason="openapi-spec-validator (dev extra) validates it")
    validator.validate(document)


def test_mount_path_is_configurable(auth: PATAuth, framework: str) -> None:
    options = {"path": "/v2/me"} if framework == "starlette" else {"url_prefix": "/v2/me"}
    with client_for(API_APPS[framework](auth, **options)) as client:
        answer = client.post("/v2/me/tokens", json={"name": "x"}, headers=ALICE)
        assert answer.status_code == 201
        assert answer.headers["location"].startswith("/v2/me/tokens/")
        assert client.get("/v2/me/openapi.json").json()["servers"] == [{"url": "/v2/me"}]


def test_custom_manage_scope(auth: PATAuth, framework: str) -> None:
    with client_for(API_APPS[framework](auth, manage_scope="self:tokens")) as client:
        old_style = auth.manager.create("alice", "a", ["tokens:manage"]).token
        new_style = auth.manager.create("alice", "b", ["self:tokens"]).token
        assert client.get("/api/tokens", headers=bearer(old_style)).status_code == 403
        assert client.get("/api/tokens", headers=bearer(new_style)).status_code == 200


# -- both frameworks answer alike -----------------------------------------------------------
def _script(client: httpx.Client) -> list[tuple[int, Any]]:
    """A fixed sequence of calls; ids and plaintexts are normalised out."""
    answers: list[tuple[int, Any]] = []

    def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
        answer = client.request(method, path, headers={**ALICE, **kwargs.pop("headers", {})}, **kwargs)
        answers.append((answer.status_code, answer.json() if answer.content else None))
        return answer

    token_id = call("POST", "/api/tokens", json={"name": "a", "scopes": ["x"]}).json()["record"]["id"]
    call("POST", "/api/tokens", json={"name": "a"})
    call("POST", "/api/tokens", json={"nam": "a"})
    call("POST", "/api/tokens", content=b"{", headers=JSON)
    call("GET", "/api/tokens?state=all")
    call("PATCH", f"/api/tokens/{token_id}", json={"description": "d"})
    call("POST", f"/api/tokens/{token_id}/rotate", json={"grace_seconds": 5})
    call("DELETE", f"/api/tokens/{token_id}")
    call("PATCH", f"/api/tokens/{token_id}", json={"name": "b"})
    call("GET", "/api/tokens/AAAAAAAAAAAA")
    call("PUT", "/api/tokens")
    text = json.dumps(answers)
    ids = {body["record"]["id"] for status, body in answers if status == 201}
    for record_id in ids | {r["id"] for r in answers[4][1]["tokens"]}:
        text = text.replace(record_id, "<id>")
    normalised: list[tuple[int, Any]] = json.loads(text)
    for status, body in normalised:
        if status == 201:
            body["token"] = "<token>"
    return normalised


def test_starlette_and_flask_answer_identically(tmp_path: Any) -> None:
    results = []
    for name in FRAMEWORKS:
        clock = FakeClock()
        auth = PATAuth(SQLiteStore(tmp_path / f"{name}.db"), hasher=FAST_ARGON2, clock=clock)
        try:
            with client_for(API_APPS[name](auth)) as client:
                results.append(_script(client))
        finally:
            auth.close()
    assert results[0] == results[1]
    assert [status for status, _ in results[0]] == [201, 409, 422, 400, 200, 200, 201, 204, 409, 404, 405]
