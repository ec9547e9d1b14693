"""The administration API, through the Starlette mount and the Flask blueprint.

Every test runs against both frameworks (the ``client`` fixture) behind the
library's own middleware, over :func:`tests.management_fixtures.management_store`
(real SQLite once it answers the oversight questions, the reference MemoryStore
until then). The admin apps (:mod:`tests.management_apps`) admit a token with the
``admin`` scope, or a request whose ``X-Admin: yes`` header the host's ``is_admin``
accepts (``X-User`` is then the administrator). One test replays a script on
both frameworks and expects identical answers; one runs a real uvicorn.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from pat_middleware import PATAuth, Policy
from pat_middleware.core.scopes import ScopeRules
from pat_middleware.flask import admin_blueprint
from pat_middleware.management.admin_api import ADMIN_ROUTES
from pat_middleware.starlette import admin_routes
from tests.helpers import FAST_ARGON2, FakeClock
from tests.management_apps import ADMIN_APPS, FRAMEWORKS, client_for

#: The shared fixtures (see tests/test_api.py for why they are imported).
from tests.management_fixtures import (  # noqa: F401 - fixtures, defined in this module's namespace
    auth,
    framework,
    management_store,
    management_store_url,
)

ROOT_ADMIN = {"X-User": "root", "X-Admin": "yes"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def client(framework: str, auth: PATAuth) -> Iterator[httpx.Client]:
    with client_for(ADMIN_APPS[framework](auth)) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(answer: httpx.Response, status: int, error: str, field: str | None = None) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    body: dict[str, Any] = answer.json()
    assert body["error"] == error, body
    assert isinstance(body["error_description"], str) and body["error_description"]
    assert body.get("field") == field, body
    return body


def log(auth: PATAuth, **filters: Any) -> list[dict[str, Any]]:
    """The security log now (the buffered writer flushed first), newest first."""
    assert auth.security_log is not None
    auth.security_log.flush()
    return [e.public_dict() for e in auth.manager.security_log(limit=1000, **filters).entries]


def seed(auth: PATAuth, clock: FakeClock) -> dict[str, str]:
    """Five tokens of three users, one minute apart: name -> id."""
    made = {}
    for user, name, scopes in [
        ("alice", "alice-ci", ["repo:read"]),
        ("alice", "alice-deploy", ["repo:write"]),
        ("bob", "bob-laptop", ["repo:*"]),
        ("bob", "bob-reader", ["issues:read"]),
        ("carol", "carol-ci", ["repo:read", "issues:read"]),
    ]:
        made[name] = auth.manager.create(user, name, scopes).record.id
        clock.advance(60)
    return made


# -- the guard --------------------------------------------------------------------------
ROUTE_CALLS = [
    ("GET", "/admin/tokens"),
    ("POST", "/admin/tokens/revoke"),
    ("GET", "/admin/tokens/AAAAAAAAAAAA"),
    ("DELETE", "/admin/tokens/AAAAAAAAAAAA"),
    ("POST", "/admin/sweep"),
    ("GET", "/admin/log"),
]


def test_route_calls_cover_every_route() -> None:
    routes = {(r.method, "/admin" + r.template.replace("{token_id}", "AAAAAAAAAAAA")) for r in ADMIN_ROUTES}
    assert routes == set(ROUTE_CALLS)


@pytest.mark.parametrize(("method", "path"), ROUTE_CALLS)
def test_no_credentials_is_401_with_a_challenge(client: httpx.Client, method: str, path: str) -> None:
    answer = client.request(method, path, json={})
    assert_error(answer, 401, "unauthorized")
    assert answer.headers["www-authenticate"] == 'Bearer realm="api"'


@pytest.mark.parametrize(("method", "path"), ROUTE_CALLS)
def test_a_token_without_the_admin_scope_is_403(client: httpx.Client, auth: PATAuth, method: str, path: str) -> None:
    token = auth.manager.create("alice", "everything else", ["repo:*", "tokens:manage"]).token
    answer = client.request(method, path, json={}, headers=bearer(token))
    assert_error(answer, 403, "insufficient_scope")
    assert 'scope="admin"' in answer.headers["www-authenticate"]


@pytest.mark.parametrize(("method", "path"), ROUTE_CALLS)
def test_a_logged_in_user_the_host_does_not_admit_is_403(client: httpx.Client, method: str, path: str) -> None:
    for headers in ({"X-User": "bob"}, {"X-User": "bob", "X-Admin": "no"}):
        assert_error(client.request(method, path, json={}, headers=headers), 403, "forbidden")


def test_the_admin_scope_admits_and_names_the_actor(client: httpx.Client, auth: PATAuth) -> None:
    admin = auth.manager.create("ops", "ops console", ["admin"]).token
    victim = auth.manager.create("alice", "ci").record.id
    assert client.get("/admin/tokens", headers=bearer(admin)).status_code == 200
    assert client.delete(f"/admin/tokens/{victim}", headers=bearer(admin)).status_code == 204
    revoked = log(auth, kinds=["revoked"])
    assert [(e["token_id"], e["user_id"], e["actor"], e["reason"]) for e in revoked] == [
        (victim, "alice", "admin:ops", "admin")
    ]
    actions = log(auth, kinds=["admin_action"])
    assert actions[0]["actor"] == "admin:ops" and actions[0]["details"]["action"] == "revoke"


def test_is_admin_admits_and_current_user_is_the_actor(client: httpx.Client, auth: PATAuth) -> None:
    victim = auth.manager.create("alice", "ci").record.id
    assert client.delete(f"/admin/tokens/{victim}", headers=ROOT_ADMIN).status_code == 204
    assert log(auth, kinds=["revoked"])[0]["actor"] == "admin:root"
    # the host admits a request that also carries a non-admin token: the session names the actor
    other = auth.manager.create("alice", "other").record.id
    token = auth.manager.create("bob", "bob's", ["repo:read"]).token
    assert client.delete(f"/admin/tokens/{other}", headers={**ROOT_ADMIN, **bearer(token)}).status_code == 204
    assert log(auth, kinds=["revoked"], token_id=other)[0]["actor"] == "admin:root"


def test_scope_implication_and_wildcards_admit(framework: str, tmp_path: Path, clock: FakeClock) -> None:
    rules = ScopeRules({"superuser": ["ops:admin"]})
    auth = PATAuth(management_store(tmp_path), hasher=FAST_ARGON2, clock=clock, scope_rules=rules)
    try:
        with client_for(ADMIN_APPS[framework](auth, admin_scope="ops:admin")) as client:
            for scopes in (["ops:admin"], ["ops:*"], ["superuser"]):
                token = auth.manager.create("root", f"t-{scopes[0]}", scopes).token
                assert client.get("/admin/tokens", headers=bearer(token)).status_code == 200, scopes
            token = auth.manager.create("root", "ops reader", ["ops:read"]).token
            assert client.get("/admin/tokens", headers=bearer(token)).status_code == 403
    finally:
        auth.close()


def test_is_admin_alone(framework: str, auth: PATAuth) -> None:
    """Without admin_scope no token admits; without current_user the actor is admin:unknown."""
    with client_for(ADMIN_APPS[framework](auth, admin_scope=None, current_user=None)) as client:
        token = auth.manager.create("root", "root's", ["admin"]).token
        assert_error(client.get("/admin/tokens", headers=bearer(token)), 403, "forbidden")
        victim = auth.manager.create("alice", "ci").record.id
        assert client.delete(f"/admin/tokens/{victim}", headers={"X-Admin": "yes"}).status_code == 204
        assert log(auth, kinds=["revoked"])[0]["actor"] == "admin:unknown"
        # admitted by the host with a (non-admin) token and no current_user: the token names the actor
        other = auth.manager.create("alice", "other").record.id
        assert client.delete(f"/admin/tokens/{other}", headers={"X-Admin": "yes", **bearer(token)}).status_code == 204
        assert log(auth, kinds=["revoked"], token_id=other)[0]["actor"] == "admin:root"


def test_admin_scope_alone(framework: str, auth: PATAuth) -> None:
    with client_for(ADMIN_APPS[framework](auth, is_admin=None)) as client:
        assert_error(client.get("/admin/tokens", headers=ROOT_ADMIN), 403, "forbidden")
        token = auth.manager.create("root", "root's", ["admin"]).token
        assert client.get("/admin/tokens", headers=bearer(token)).status_code == 200


def test_only_true_admits(framework: str, auth: PATAuth) -> None:
    """``is_admin`` must say True: a truthy user object or string is not an answer."""
    truthy = (lambda request: "yes") if framework == "starlette" else (lambda: "yes")
    with client_for(ADMIN_APPS[framework](auth, is_admin=truthy, admin_scope=None)) as client:
        assert_error(client.get("/admin/tokens", headers={"X-User": "root"}), 403, "forbidden")


def test_an_async_is_admin(auth: PATAuth) -> None:
    async def is_admin(request: Any) -> bool:
        return request.headers.get("x-admin") == "yes"

    with client_for(ADMIN_APPS["starlette"](auth, is_admin=is_admin)) as client:
        assert client.get("/admin/tokens", headers=ROOT_ADMIN).status_code == 200
        assert client.get("/admin/tokens", headers={"X-User": "root"}).status_code == 403


def test_a_guard_is_required_at_mount_time(auth: PATAuth) -> None:
    with pytest.raises(ValueError, match="is_admin"):
        admin_routes(auth)
    with pytest.raises(ValueError, match="is_admin"):
        admin_blueprint(auth)
    with pytest.raises(ValueError, match="callable"):
        admin_routes(auth, is_admin=True)  # type: ignore[arg-type]


# -- searching --------------------------------------------------------------------------
def test_search_every_users_tokens(client: httpx.Client, auth: PATAuth, clock: FakeClock) -> None:
    made = seed(auth, clock)
    body = client.get("/admin/tokens", headers=ROOT_ADMIN).json()
    assert body["next_cursor"] is None
    assert [r["name"] for r in body["tokens"]] == list(reversed(made))  # newest first by default
    first = body["tokens"][0]
    assert first["user_id"] == "carol" and first["state"] == "active"
    assert "hash" not in json.dumps(body) and "secret" not in first

    def names(query: str) -> list[str]:
        answer = client.get(f"/admin/tokens?{query}", headers=ROOT_ADMIN)
        assert answer.status_code == 200, answer.text
        return sorted(r["name"] for r in answer.json()["tokens"])

    assert names("user_id=bob") == ["bob-laptop", "bob-reader"]
    assert names("scope=repo:read") == ["alice-ci", "bob-laptop", "carol-ci"]  # held, or by a wildcard
    assert names("name_contains=CI") == ["alice-ci", "carol-ci"]
    assert names("scope=issues:read&user_id=carol") == ["carol-ci"]
    start = clock.datetime - timedelta(minutes=5)
    assert names(f"created_before={quote((start + timedelta(seconds=90)).isoformat())}") == ["alice-ci", "alice-deploy"]
    assert names("created_after=" + (start + timedelta(seconds=150)).strftime("%Y-%m-%dT%H:%M:%SZ")) == [
        "bob-reader",
        "carol-ci",
    ]
    auth.manager.revoke(made["bob-reader"])
    assert names("state=revoked") == ["bob-reader"]
    assert len(names("state=active")) == 4
    assert names("unused_for=4m") == ["alice-ci", "alice-deploy"]  # activity at or before now - 4 minutes
    soon = auth.manager.create("dave", "short", expires_in=timedelta(days=3)).record.id
    assert names("expiring_within=7d") == ["short"]
    assert soon in {r["id"] for r in client.get("/admin/tokens?user_id=dave", headers=ROOT_ADMIN).json()["tokens"]}


def test_paging_through_cursors(client: httpx.Client, auth: PATAuth, clock: FakeClock) -> None:
    made = seed(auth, clock)
    for sort, expected in [
        ("created_at", list(made.values())),
        ("-created_at", list(reversed(made.values()))),
        ("last_used_at", list(made.values())),  # never used: by creation
        ("-last_used_at", list(reversed(made.values()))),
    ]:
        seen: list[str] = []
        cursor = None
        for _ in range(5):
            query: dict[str, Any] = {"sort": sort, "limit": 2}
            if cursor:
                query["cursor"] = cursor
            body = client.get("/admin/tokens", params=query, headers=ROOT_ADMIN).json()
            seen += [r["id"] for r in body["tokens"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == expected, sort
    # a cursor belongs to its sort order
    cursor = client.get("/admin/tokens?sort=created_at&limit=1", headers=ROOT_ADMIN).json()["next_cursor"]
    answer = client.get("/admin/tokens", params={"sort": "-created_at", "cursor": cursor}, headers=ROOT_ADMIN)
    assert_error(answer, 400, "invalid_request", "cursor")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("state=active&state=all", "state"),
        ("user_id=a&user_id=b", "user_id"),
        ("limit=1&limit=2", "limit"),
        ("bogus=1", "bogus"),
        ("state=sleeping", "state"),
        ("sort=name", "sort"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("limit=99999999999999999999", "limit"),
        ("limit=-1", "limit"),
        ("cursor=%%%", "cursor"),
        ("cursor=bm90IGpzb24", "cursor"),
        ("created_after=yesterday", "created_after"),
        ("created_before=2026-13-01", "created_before"),
        ("last_used_after=0001-01-01T00:00:00%2B01:00", "last_used_after"),
        ("last_used_before=9999-12-31T23:59:59-01:00", "last_used_before"),
        ("unused_for=90", "unused_for"),
        ("unused_for=1d1d", "unused_for"),
        ("unused_for=-3d", "unused_for"),
        ("unused_for=99999999999w", "unused_for"),
        ("unused_for=2000000w", "unused_for"),
        ("expiring_within=soon", "expiring_within"),
        ("expiring_within=2000000w", "expiring_within"),
        ("scope=has%20space", "scope"),
        ("name_contains=" + "x" * 101, "name_contains"),
        ("user_id=%00", "user_id"),
        ("user_id=" + "u" * 256, "user_id"),
    ],
)
def test_hostile_search_parameters_are_400_naming_the_field(client: httpx.Client, query: str, field: str) -> None:
    assert_error(client.get(f"/admin/tokens?{query}", headers=ROOT_ADMIN), 400, "invalid_request", field)


def test_get_and_revoke_any_token(client: httpx.Client, auth: PATAuth) -> None:
    new = auth.manager.create("alice", "ci", ["repo:read"])
    answer = client.get(f"/admin/tokens/{new.record.id}", headers=ROOT_ADMIN)
    assert answer.status_code == 200 and answer.json()["user_id"] == "alice" and answer.json()["name"] == "ci"
    assert client.get("/whoami", headers=bearer(new.token)).text == "alice"
    answer = client.delete(f"/admin/tokens/{new.record.id}", headers=ROOT_ADMIN)
    assert answer.status_code == 204 and answer.content == b""
    assert client.get("/whoami", headers=bearer(new.token)).status_code == 401  # refused right away
    assert client.get(f"/admin/tokens/{new.record.id}", headers=ROOT_ADMIN).json()["state"] == "revoked"
    assert client.delete(f"/admin/tokens/{new.record.id}", headers=ROOT_ADMIN).status_code == 204  # idempotent
    for token_id in ("AAAAAAAAAAAA", "nope", "x" * 300, "%00"):
        assert_error(client.get(f"/admin/tokens/{token_id}", headers=ROOT_ADMIN), 404, "not_found")
        assert_error(client.delete(f"/admin/tokens/{token_id}", headers=ROOT_ADMIN), 404, "not_found")


# -- revoking by filter -----------------------------------------------------------------
def test_revoke_by_filter_dry_run_first_then_for_real(client: httpx.Client, auth: PATAuth, clock: FakeClock) -> None:
    made = seed(auth, clock)
    tokens = {name: auth.manager.create(user, f"{name}-2", scopes).token for name, user, scopes in [
        ("hit", "alice", ["repo:write"]), ("miss", "bob", ["issues:read"])]}  # fmt: skip
    body = {"filter": {"scope": "repo:write", "state": "active"}, "dry_run": True}
    dry = client.post("/admin/tokens/revoke", json=body, headers=ROOT_ADMIN)
    assert dry.status_code == 200, dry.text
    report = dry.json()
    expected = {made["alice-deploy"], made["bob-laptop"], tokens["hit"][4:16]}
    assert report["dry_run"] is True and report["count"] == 3 and set(report["ids"]) == expected
    assert report["filter"] == {"scope": "repo:write", "state": "active"}
    assert client.get("/whoami", headers=bearer(tokens["hit"])).text == "alice"  # nothing changed
    assert all(auth.manager.get(i).revoked_at is None for i in expected)

    clock.advance(1)  # entries of one moment have no order
    real = client.post("/admin/tokens/revoke", json={**body, "dry_run": False}, headers=ROOT_ADMIN).json()
    assert real["dry_run"] is False and set(real["ids"]) == expected
    assert client.get("/whoami", headers=bearer(tokens["hit"])).status_code == 401
    assert client.get("/whoami", headers=bearer(tokens["miss"])).text == "bob"
    clock.advance(1)
    again = client.post("/admin/tokens/revoke", json=body, headers=ROOT_ADMIN).json()
    assert again["count"] == 0  # revoked ones are not counted twice

    actions = [e for e in reversed(log(auth, kinds=["admin_action"])) if e["details"]["action"] == "revoke_matching"]
    assert [(e["actor"], e["details"]["dry_run"], e["details"]["count"]) for e in actions] == [
        ("admin:root", True, 3),
        ("admin:root", False, 3),
        ("admin:root", True, 0),
    ]
    revoked = log(auth, kinds=["revoked"])
    assert {e["token_id"] for e in revoked} == expected and {e["actor"] for e in revoked} == {"admin:root"}


@pytest.mark.parametrize(
    ("body", "status", "error", "field"),
    [
        ({}, 422, "validation_error", "filter"),
        ({"filter": {}}, 400, "invalid_request", "filter"),
        ({"filter": {"state": "all"}}, 400, "invalid_request", "filter"),
        ({"filter": {"bogus": "1"}}, 400, "invalid_request", "filter.bogus"),
        ({"filter": {"unused_for": "forever"}}, 400, "invalid_request", "filter.unused_for"),
        ({"filter": {"unused_for": "2000000w"}}, 400, "invalid_request", "filter.unused_for"),
        ({"filter": {"created_after": "0001-01-01T00:00:00+01:00"}}, 400, "invalid_request", "filter.created_after"),
        ({"filter": {"state": "sleeping"}}, 400, "invalid_request", "filter.state"),
        ({"filter": {"scope": ""}}, 400, "invalid_request", "filter.scope"),
        ({"filter": {"user_id": 7}}, 422, "validation_error", "filter"),
        ({"filter": ["scope", "x"]}, 422, "validation_error", "filter"),
        ({"filter": {"scope": "x"}, "dry_run": "yes"}, 422, "validation_error", "dry_run"),
        ({"filter": {"scope": "x"}, "force": True}, 422, "validation_error", "force"),
    ],
)
def test_revoke_by_filter_bad_bodies(
    client: httpx.Client, body: dict[str, Any], status: int, error: str, field: str
) -> None:
    assert_error(client.post("/admin/tokens/revoke", json=body, headers=ROOT_ADMIN), status, error, field)


def test_revoke_by_filter_bad_json(client: httpx.Client) -> None:
    for content in (b"{", b'{"filter": {"scope": "x"}, "filter": {}}', b"NaN", b"\xff"):
        answer = client.post("/admin/tokens/revoke", content=content, headers={**ROOT_ADMIN, **JSON})
        assert_error(answer, 400, "invalid_json")
    answer = client.post("/admin/tokens/revoke", content=b"filter=x", headers=ROOT_ADMIN)
    assert_error(answer, 415, "unsupported_media_type")
    answer = client.post("/admin/tokens/revoke", content=b"[" * 70_000, headers={**ROOT_ADMIN, **JSON})
    assert_error(answer, 413, "payload_too_large")


# -- the inactivity sweep -----------------------------------------------------------------
def test_sweep_needs_an_inactivity_policy(client: httpx.Client) -> None:
    answer = client.post("/admin/sweep", headers=ROOT_ADMIN)
    assert_error(answer, 400, "invalid_request", "revoke_unused_after")


def test_sweep_with_a_fake_clock(framework: str, tmp_path: Path, clock: FakeClock) -> None:
    policy = Policy(revoke_unused_after=timedelta(days=30))
    auth = PATAuth(management_store(tmp_path), hasher=FAST_ARGON2, clock=clock, policy=policy)
    try:
        with client_for(ADMIN_APPS[framework](auth)) as client:
            old = auth.manager.create("alice", "old", expires_in=timedelta(days=90)).token
            clock.advance(timedelta(days=20))
            recent = auth.manager.create("bob", "recent", expires_in=timedelta(days=90)).token
            clock.advance(timedelta(days=11))  # old: 31 days unused; recent: 11
            states = {r["name"]: r["state"] for r in client.get("/admin/tokens", headers=ROOT_ADMIN).json()["tokens"]}
            assert states == {"old": "inactive", "recent": "active"}
            own = client.get("/api/tokens?state=inactive", headers={"X-User": "alice"}).json()["tokens"]
            assert [(r["name"], r["state"]) for r in own] == [("old", "inactive")]
            assert client.get("/whoami", headers=bearer(old)).status_code == 401  # inactive: refused

            dry = client.post("/admin/sweep", json={"dry_run": True}, headers=ROOT_ADMIN).json()
            assert dry == {"dry_run": True, "count": 1, "ids": [old[4:16]]}
            assert auth.manager.get(old[4:16]).revoked_at is None
            clock.advance(1)  # entries of one moment have no order
            real = client.post("/admin/sweep", headers=ROOT_ADMIN)  # no body: not a dry run
            assert real.status_code == 200 and real.json() == {"dry_run": False, "count": 1, "ids": [old[4:16]]}
            assert auth.manager.get(old[4:16]).revoked_at is not None
            assert client.get("/whoami", headers=bearer(recent)).text == "bob"
            clock.advance(1)
            assert client.post("/admin/sweep", json={}, headers=ROOT_ADMIN).json()["count"] == 0

            revoked = log(auth, kinds=["revoked"])
            assert [(e["token_id"], e["actor"], e["reason"]) for e in revoked] == [
                (old[4:16], "admin:root", "inactive")
            ]
            sweeps = {(e["at"], e["actor"], e["details"].get("dry_run"), e["details"]["count"])
                      for e in log(auth, kinds=["admin_action"])}  # fmt: skip
            moments = sorted({at for at, *_ in sweeps})
            assert sorted((moments.index(at), *rest) for at, *rest in sweeps) == [
                (0, "admin:root", True, 1),
                (1, "admin:root", False, 1),
                (2, "admin:root", False, 0),
            ]
            bad = client.post("/admin/sweep", json={"dry_run": 1}, headers=ROOT_ADMIN)
            assert_error(bad, 422, "validation_error", "dry_run")
            assert_error(client.post("/admin/sweep", content=b"x", headers=ROOT_ADMIN), 415, "unsupported_media_type")
    finally:
        auth.close()


# -- the security log -------------------------------------------------------------------------
def test_log_filters_and_paging(client: httpx.Client, auth: PATAuth, clock: FakeClock) -> None:
    made = seed(auth, clock)
    auth.manager.rename(made["alice-ci"], "alice-ci-renamed")
    clock.advance(60)
    auth.manager.revoke(made["bob-laptop"], actor="admin:ops")
    assert auth.security_log is not None
    auth.security_log.flush()

    def entries(query: str) -> list[dict[str, Any]]:
        answer = client.get(f"/admin/log?{query}", headers=ROOT_ADMIN)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert set(body) == {"entries", "next_cursor"}
        result: list[dict[str, Any]] = body["entries"]
        return result

    everything = entries("")
    # the revocation and its admin_action share a moment: their order is the ids' (random within it)
    assert {e["kind"] for e in everything[:2]} == {"admin_action", "revoked"} and everything[2]["kind"] == "renamed"
    assert len(everything) == 8 and everything == sorted(everything, key=lambda e: e["id"], reverse=True)
    assert {e["user_id"] for e in entries("user_id=alice")} == {"alice"}
    assert [e["kind"] for e in entries(f"token_id={made['alice-ci']}")] == ["renamed", "created"]
    assert [e["kind"] for e in entries("kind=renamed&kind=revoked")] == ["revoked", "renamed"]
    assert entries("kind=revoked")[0]["actor"] == "admin:ops"
    since = (clock.datetime - timedelta(seconds=90)).isoformat()
    assert sorted(e["kind"] for e in entries(f"since={quote(since)}")) == ["admin_action", "renamed", "revoked"]
    until = clock.datetime - timedelta(minutes=4)
    assert [e["token_id"] for e in entries("until=" + quote(until.isoformat()))] == [
        made["alice-deploy"],
        made["alice-ci"],
    ]
    seen: list[str] = []
    cursor = ""
    while True:
        body = client.get(f"/admin/log?limit=3{cursor}", headers=ROOT_ADMIN).json()
        seen += [e["id"] for e in body["entries"]]
        if body["next_cursor"] is None:
            break
        cursor = f"&cursor={body['next_cursor']}"
    assert seen == [e["id"] for e in everything]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("kind=verified", "kind"),
        ("kind=bogus", "kind"),
        ("token_id=abc", "token_id"),
        ("token_id=a&token_id=b", "token_id"),
        ("user_id=%00", "user_id"),
        ("since=soon", "since"),
        ("until=2026-02-30", "until"),
        ("since=0001-01-01T00:00:00%2B05:00", "since"),
        ("cursor=zz", "cursor"),
        ("cursor=" + "g" * 22, "cursor"),
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
        ("other=1", "other"),
    ],
)
def test_hostile_log_parameters_are_400(client: httpx.Client, query: str, field: str) -> None:
    assert_error(client.get(f"/admin/log?{query}", headers=ROOT_ADMIN), 400, "invalid_request", field)


def test_the_users_own_log(client: httpx.Client, auth: PATAuth, clock: FakeClock) -> None:
    made = seed(auth, clock)
    auth.manager.revoke(made["alice-ci"], actor="admin:ops")
    assert auth.security_log is not None
    auth.security_log.flush()
    alice = {"X-User": "alice"}
    body = client.get("/api/log", headers=alice).json()
    assert {e["user_id"] for e in body["entries"]} == {"alice"} and body["next_cursor"] is None
    assert [(e["kind"], e["actor"]) for e in body["entries"]] == [
        ("revoked", "admin:ops"),
        ("created", None),
        ("created", None),
    ]
    assert [e["kind"] for e in client.get("/api/log?kind=revoked", headers=alice).json()["entries"]] == ["revoked"]
    page = client.get("/api/log?limit=2", headers=alice).json()
    assert len(page["entries"]) == 2 and page["next_cursor"]
    rest = client.get(f"/api/log?limit=2&cursor={page['next_cursor']}", headers=alice).json()
    assert len(rest["entries"]) == 1 and rest["next_cursor"] is None
    # another user's token: nothing, whatever the filter
    assert client.get(f"/api/log?token_id={made['bob-laptop']}", headers=alice).json()["entries"] == []
    assert_error(client.get("/api/log?user_id=bob", headers=alice), 400, "invalid_request", "user_id")
    assert_error(client.get("/api/log?limit=1&limit=2", headers=alice), 400, "invalid_request", "limit")
    assert_error(client.get("/api/log"), 401, "unauthorized")
    token = auth.manager.create("alice", "reader", ["repo:read"]).token
    assert_error(client.get("/api/log", headers=bearer(token)), 403, "insufficient_scope")


# -- the document, routing ------------------------------------------------------------------
def test_openapi_document(client: httpx.Client) -> None:
    answer = client.get("/admin/openapi.json")
    assert answer.status_code == 200
    document = answer.json()
    assert document["servers"] == [{"url": "/admin"}]
    operations = {(m.upper(), p) for p, item in document["paths"].items() for m in item}
    assert operations == {(r.method, r.template) for r in ADMIN_ROUTES}
    search = {p["name"] for p in document["paths"]["/tokens"]["get"]["parameters"]}
    assert {"state", "scope", "unused_for", "expiring_within", "sort", "cursor", "limit"} <= search
    assert "`admin` scope" in document["info"]["description"]
    validator = pytest.importorskip("openapi_spec_validator", reason="openapi-spec-validator (dev extra) validates it")
    validator.validate(document)
    own = client.get("/api/openapi.json").json()
    assert "/log" in own["paths"]
    validator.validate(own)


def test_unknown_routes_and_methods(client: httpx.Client) -> None:
    assert_error(client.get("/admin/nothing", headers=ROOT_ADMIN), 404, "not_found")
    assert_error(client.get("/admin/tokens/revoke", headers=ROOT_ADMIN), 404, "not_found")
    answer = client.put("/admin/tokens", headers=ROOT_ADMIN)
    assert_error(answer, 405, "method_not_allowed")
    assert answer.headers["allow"] == "GET, HEAD"
    answer = client.get("/admin/sweep", headers=ROOT_ADMIN)
    assert_error(answer, 405, "method_not_allowed")
    assert answer.headers["allow"] == "POST"


def test_mount_path_is_configurable(auth: PATAuth, framework: str) -> None:
    options = {"path": "/ops/pat"} if framework == "starlette" else {"url_prefix": "/ops/pat"}
    with client_for(ADMIN_APPS[framework](auth, **options)) as client:
        assert client.get("/ops/pat/tokens", headers=ROOT_ADMIN).status_code == 200
        assert client.get("/ops/pat/openapi.json").json()["servers"] == [{"url": "/ops/pat"}]


# -- both frameworks answer alike ------------------------------------------------------------
def _script(client: httpx.Client, auth: PATAuth, clock: FakeClock) -> list[tuple[int, Any]]:
    answers: list[tuple[int, Any]] = []

    def call(method: str, path: str, headers: dict[str, str] = ROOT_ADMIN, **kwargs: Any) -> httpx.Response:
        answer = client.request(method, path, headers=headers, **kwargs)
        answers.append((answer.status_code, answer.json() if answer.content else None))
        return answer

    ids = []
    for user, name in [("a", "x"), ("b", "y")]:
        ids.append(auth.manager.create(user, name, ["repo:read"]).record.id)
        clock.advance(1)  # entries of one moment have no order
    call("GET", "/admin/tokens", headers={})
    call("GET", "/admin/tokens", headers={"X-User": "a"})
    call("GET", "/admin/tokens?sort=created_at&limit=1")
    call("GET", "/admin/tokens?state=all&state=all")
    call("GET", "/admin/tokens?unused_for=eventually")
    call("GET", f"/admin/tokens/{ids[0]}")
    call("POST", "/admin/tokens/revoke", json={"filter": {"user_id": "b"}, "dry_run": True})
    call("POST", "/admin/tokens/revoke", json={"filter": {}})
    call("POST", "/admin/tokens/revoke", content=b"{", headers={**ROOT_ADMIN, **JSON})
    call("DELETE", f"/admin/tokens/{ids[1]}")
    call("POST", "/admin/sweep")
    assert auth.security_log is not None
    auth.security_log.flush()
    call("GET", "/admin/log?kind=created&limit=1")
    call("GET", "/admin/log?kind=nope")
    call("PATCH", "/admin/tokens")
    text = json.dumps(answers)
    for token_id in ids:
        text = text.replace(token_id, "<id>")
    normalised: list[tuple[int, Any]] = json.loads(text)
    for status, body in normalised:
        if isinstance(body, dict):
            for key in ("next_cursor",):
                if body.get(key):
                    body[key] = "<cursor>"
            for entry in body.get("entries", []):
                entry["id"] = "<entry>"
    return normalised


def test_starlette_and_flask_answer_identically(tmp_path: Path) -> None:
    results = []
    for name in FRAMEWORKS:
        clock = FakeClock()
        (tmp_path / name).mkdir()
        auth = PATAuth(management_store(tmp_path / name), hasher=FAST_ARGON2, clock=clock)
        try:
            with client_for(ADMIN_APPS[name](auth)) as client:
                results.append(_script(client, auth, clock))
        finally:
            auth.close()
    assert results[0] == results[1]
    statuses = [status for status, _ in results[0]]
    assert statuses == [401, 403, 200, 400, 400, 200, 200, 400, 400, 204, 400, 200, 400, 405]


# -- a real server ---------------------------------------------------------------------------
def test_through_a_real_uvicorn(tmp_path: Path) -> None:
    """The admin app (tests/admin_server_app.py) under uvicorn in a subprocess: tokens made
    through the self-service API, an admin token revokes by filter, the server refuses them."""
    from tests.test_example_starlette import ROOT, Process, free_port

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PAT_STORE_URL": management_store_url(tmp_path)}
    env.pop("PAT_CACHE_URL", None)
    argv = [sys.executable, "-m", "uvicorn", "tests.admin_server_app:app", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning"]  # fmt: skip
    process = Process(argv, env)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.proc.poll() is None, process.text()
            try:
                if httpx.get(f"{base}/admin/openapi.json", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, process.text()
            time.sleep(0.1)
        with httpx.Client(base_url=base, timeout=10) as http:

            def make(user: str, name: str, scopes: list[str]) -> str:
                answer = http.post("/api/tokens", json={"name": name, "scopes": scopes}, headers={"X-User": user})
                assert answer.status_code == 201, answer.text
                return str(answer.json()["token"])

            admin = bearer(make("root", "console", ["admin"]))
            leaked = [make("alice", "ci", ["repo:write"]), make("bob", "ci", ["repo:write"])]
            safe = make("carol", "ci", ["repo:read"])
            assert http.get("/admin/tokens").status_code == 401
            assert http.get("/admin/tokens", headers=bearer(safe)).status_code == 403
            listed = http.get("/admin/tokens?scope=repo:write", headers=admin).json()["tokens"]
            assert sorted(r["user_id"] for r in listed) == ["alice", "bob"]
            body = {"filter": {"scope": "repo:write"}, "dry_run": True}
            assert http.post("/admin/tokens/revoke", json=body, headers=admin).json()["count"] == 2
            assert all(http.get("/whoami", headers=bearer(t)).status_code == 200 for t in leaked)
            done = http.post("/admin/tokens/revoke", json={**body, "dry_run": False}, headers=admin).json()
            assert done["count"] == 2
            assert [http.get("/whoami", headers=bearer(t)).status_code for t in [*leaked, safe]] == [401, 401, 200]
            assert http.get("/admin/tokens?limit=1001", headers=admin).status_code == 400
            deadline = time.monotonic() + 10
            while True:  # the log's writer flushes within half a second
                kinds = [e["kind"] for e in http.get("/admin/log", headers=admin).json()["entries"]]
                if kinds.count("revoked") == 2 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert kinds.count("revoked") == 2 and kinds.count("admin_action") == 2 and kinds.count("created") == 4
    finally:
        process.stop(15)


# -- the admin scope must not be every user's to issue -------------------------------------------
def test_a_self_issuable_admin_scope_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def per_user(user: str) -> list[str]:
        return ["admin"] if user == "root" else ["repo:read"]

    rules = ScopeRules({"owner": ["admin:tokens"]})
    for allowed, warned in [(None, True), (["repo:*", "admin:*"], True), (["admin:*"], True), (["owner"], True),
                            (["repo:read"], False), (per_user, False)]:  # fmt: skip
        policy = Policy(allowed_scopes=allowed)
        auth = PATAuth(management_store(tmp_path), hasher=FAST_ARGON2, policy=policy, scope_rules=rules)
        try:
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="pat_middleware"):
                admin_routes(auth, admin_scope="admin:tokens")
            assert ("any user can create a token with the admin scope" in caplog.text) is warned, allowed
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="pat_middleware"):
                admin_routes(auth, is_admin=lambda request: False)
            assert caplog.text == ""
        finally:
            auth.close()
