"""The Django mounts (management API, settings page), the admin page, ``manage.py pat``
and the checks of ``settings.PAT``."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.test import Client

from pat_middleware import PATAuth
from pat_middleware.django import get_auth
from pat_middleware.django.conf import check_settings, load
from pat_middleware.django.models import Token
from tests.django_support import fresh_pat  # noqa: F401 - a fixture

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_pat")]


FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice", password="pw")


@pytest.fixture
def auth() -> PATAuth:
    return get_auth()


def csrf_client(user: User) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


# -- the management API ------------------------------------------------------------------
def test_api_with_a_manage_token(auth: PATAuth, alice: User) -> None:
    manage = auth.manager.create(str(alice.pk), "admin", ["tokens:manage", "repo:read"]).token
    client = Client(enforce_csrf_checks=True, headers={"Authorization": f"Bearer {manage}"})
    created = client.post("/api/tokens", {"name": "ci", "scopes": ["repo:read"]}, content_type="application/json")
    assert created.status_code == 201, created.content
    assert created.json()["token"].startswith("pat_")
    listed = client.get("/api/tokens").json()
    assert {t["name"] for t in listed["tokens"]} == {"admin", "ci"}
    assert all("hash" not in t for t in listed["tokens"])
    token_id = created.json()["record"]["id"]
    assert client.delete(f"/api/tokens/{token_id}").status_code == 204
    assert client.get("/api/openapi.json").json()["openapi"].startswith("3.1")


def test_api_with_a_session_needs_django_csrf(alice: User) -> None:
    client = csrf_client(alice)
    assert client.get("/api/tokens").status_code == 200
    refused = client.post("/api/tokens", {"name": "ci", "scopes": []}, content_type="application/json")
    assert refused.status_code == 403 and refused.json()["error"] == "csrf"
    client.get("/settings/tokens")  # sets the CSRF cookie
    csrf = client.cookies["csrftoken"].value
    created = client.post(
        "/api/tokens", {"name": "ci", "scopes": []}, content_type="application/json", headers={"X-CSRFToken": csrf}
    )
    assert created.status_code == 201
    assert Token.objects.get(pk=created.json()["record"]["id"]).user_id == str(alice.pk)


def test_api_refusals_are_the_apis(alice: User, auth: PATAuth) -> None:
    assert Client().get("/api/tokens").status_code == 401
    weak = auth.manager.create(str(alice.pk), "weak", ["repo:read"]).token
    response = Client().get("/api/tokens", headers={"Authorization": f"Bearer {weak}"})
    assert response.status_code == 403 and response.json()["error"] == "insufficient_scope"
    client = Client()
    client.force_login(alice)
    assert client.get("/api/nothing-here").status_code == 404
    response = client.post("/api/tokens", b"{", content_type="application/json")
    assert response.status_code == 400
    response = client.post("/api/tokens", b"x" * 70_000, content_type="application/json")
    assert response.status_code == 413
    assert client.post("/api/tokens", b"\xff\xfe", content_type="application/json").status_code == 400
    assert client.post("/api/tokens", "name=x", content_type="text/plain").status_code == 415


# -- the settings page ----------------------------------------------------------------------
def test_settings_page_creates_a_token_with_djangos_csrf(alice: User) -> None:
    client = csrf_client(alice)
    page = client.get("/settings/tokens")
    assert page.status_code == 200 and b"Personal access tokens" in page.content
    csrf = re.search(rb'name="csrf_token" value="([^"]+)"', page.content)
    assert csrf is not None
    form = {"csrf_token": csrf.group(1).decode(), "action": "create", "name": "laptop", "scope": ["repo:read"]}
    made = client.post("/settings/tokens", urlencode(form, doseq=True), content_type=FORM)
    assert made.status_code == 200, made.content[:500]
    assert re.search(rb"pat_[0-9A-Za-z]{40,}", made.content)
    assert Token.objects.get(name="laptop").user_id == str(alice.pk)
    forged_form = {**form, "csrf_token": "x" * 64, "name": "evil"}
    forged = client.post("/settings/tokens", urlencode(forged_form, doseq=True), content_type=FORM)
    assert forged.status_code == 403
    assert not Token.objects.filter(name="evil").exists()


def test_settings_page_sends_anonymous_visitors_to_login(settings: Any) -> None:
    settings.LOGIN_URL = "/accounts/login/"
    response = Client().get("/settings/tokens")
    assert response.status_code in (302, 303)
    assert response["Location"].startswith("/accounts/login/?next=/settings/tokens")


# -- the admin ----------------------------------------------------------------------------------
def test_admin_lists_without_the_hash_and_revokes(auth: PATAuth, alice: User) -> None:
    made = auth.manager.create(str(alice.pk), "ci", ["repo:read"])
    admin_user = User.objects.create_superuser("root", password="pw")
    client = Client()
    client.force_login(admin_user)
    listing = client.get("/admin/pat_middleware/token/")
    assert listing.status_code == 200
    assert made.record.id.encode() in listing.content
    assert b"argon2" not in listing.content
    detail = client.get(f"/admin/pat_middleware/token/{made.record.id}/change/")
    assert detail.status_code == 200 and b"argon2" not in detail.content
    assert auth.verify(made.token).token_id == made.record.id
    response = client.post(
        "/admin/pat_middleware/token/", {"action": "revoke_selected", "_selected_action": [made.record.id]}
    )
    assert response.status_code == 302
    assert Token.objects.get(pk=made.record.id).revoked_at is not None
    with pytest.raises(Exception, match="invalid"):
        auth.verify(made.token)  # the manager revoked it: the cache knows


# -- manage.py pat --------------------------------------------------------------------------------
def test_manage_py_pat_commands(alice: User, capsys: pytest.CaptureFixture[str]) -> None:
    call_command("pat", "create", str(alice.pk), "cli", "-s", "repo:read", "--expires-in", "30d")
    token = capsys.readouterr().out.strip()
    assert token.startswith("pat_")
    call_command("pat", "list", str(alice.pk))
    assert "cli" in capsys.readouterr().out
    call_command("pat", "revoke", token[4:16])
    with pytest.raises(CommandError):
        call_command("pat", "show", "nosuchtoken0")
    with pytest.raises(CommandError):
        call_command("pat", "db", "init")  # migrate creates the table
    assert Token.objects.get(pk=token[4:16]).revoked_at is not None


def test_manage_py_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("pat", "--help")
    out = capsys.readouterr().out
    for name in ("create", "list", "show", "rename", "expire", "revoke", "revoke-all", "rotate", "verify",
                 "expiring", "purge", "scan"):  # fmt: skip
        assert name in out


# -- settings.PAT -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "named"),
    [
        ({"LOCAL_TTL": -1}, 'PAT["LOCAL_TTL"]'),
        ({"LOCAL_TTL": "5"}, 'PAT["LOCAL_TTL"]'),
        ({"REALM": "bad\nrealm"}, 'PAT["REALM"]'),
        ({"PREFIX": "BAD"}, 'PAT["PREFIX"]'),
        ({"REQUIRED": "yes"}, 'PAT["REQUIRED"]'),
        ({"EXEMPT": ["nope"]}, 'PAT["EXEMPT"]'),
        ({"EXPIRY_HEADER": "Bad: header"}, 'PAT["EXPIRY_HEADER"]'),
        ({"CACHE_PREFIX": "has space"}, 'PAT["CACHE_PREFIX"]'),
        ({"POLICY": "no.such.module"}, 'PAT["POLICY"]'),
        ({"POLICY": 3}, 'PAT["POLICY"]'),
        ({"HASHER": object()}, 'PAT["HASHER"]'),
        ({"DATABASE": "nowhere"}, 'PAT["DATABASE"]'),
        ({"REVOCATION_POLL": 0}, 'PAT["REVOCATION_POLL"]'),
        ({"HASH_WORKERS": 0}, 'PAT["HASH_WORKERS"]'),
        ({"AUTH": 42}, 'PAT["AUTH"]'),
        ({"AUTH": "tests.django_settings.SECRET_KEY"}, 'PAT["AUTH"]'),
        ({"AUTH": lambda: None, "REALM": "x"}, 'PAT["AUTH"]'),
        ({"USER_RESOLVER": 5}, 'PAT["USER_RESOLVER"]'),
        ({"AVAILABLE_SCOPES": ["a b"]}, 'PAT["AVAILABLE_SCOPES"]'),
        ({"NO_SUCH_KEY": 1}, "NO_SUCH_KEY"),
        ([], "settings.PAT must be a dict"),
    ],
)
def test_bad_settings_name_the_key(value: Any, named: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=re.escape(named)):
        load(value)


def test_settings_are_checked_at_start_up(settings: Any) -> None:
    settings.PAT = {"LOCAL_TTL": "soon"}
    with pytest.raises(ImproperlyConfigured, match=re.escape('PAT["LOCAL_TTL"]')):
        check_settings()
    settings.USE_TZ = False
    settings.PAT = {}
    with pytest.raises(ImproperlyConfigured, match="USE_TZ"):
        check_settings()


def test_auth_given_ready_or_by_path(settings: Any, tmp_path: Any) -> None:
    ready = PATAuth.from_url(f"sqlite:///{tmp_path}/t.db", realm="given")
    settings.PAT = {"AUTH": ready}
    assert get_auth() is ready
    settings.PAT = {"AUTH": lambda: ready}
    assert get_auth() is ready
    ready.close()
