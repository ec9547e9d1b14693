"""The token settings page, in Starlette and in Flask, with real sessions and CSRF.

Each test logs in through the demo login form and drives the page's forms
over HTTP, as a browser without JavaScript would (the browser test does the
rest).
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from jinja2 import DictLoader, FileSystemLoader
from markupsafe import escape  # the templates' autoescape

from pat_middleware import PATAuth, Policy, SQLiteStore
from pat_middleware.core.models import NewToken, TokenRecord
from pat_middleware.core.tokens import TOKEN_PATTERN
from pat_middleware.errors import InvalidToken
from pat_middleware.management.api import TokenAPI
from pat_middleware.management.bodies import CreateForm
from pat_middleware.management.settings_page import SettingsPage, View, page_environment, render_page
from tests.helpers import FAST_ARGON2, FakeClock
from tests.management_apps import (
    BAD_SESSION_USERS,
    NO_SESSION_USERS,
    SITE_APPS,
    SessionUser,
    client_for,
    session_user_site,
)

#: The shared fixtures ``auth`` (real SQLite store, on the ``clock`` of conftest) and ``framework``,
#: imported (not ``pytest_plugins``, which would make them global and let another module's ``auth`` win).
from tests.management_fixtures import auth, framework  # noqa: F401 - fixtures, defined in this module's namespace

PAGE = "/settings/tokens"
#: The page's form actions.
ACTIONS = ("create", "rotate", "rename", "revoke")


@pytest.fixture
def site(framework: str, auth: PATAuth) -> Iterator[httpx.Client]:
    with client_for(SITE_APPS[framework](auth)) as client:
        yield client


def login(client: httpx.Client, user: str = "alice") -> str:
    """Log in; returns the page's CSRF token."""
    answer = client.post("/login", data={"username": user}, follow_redirects=False)
    assert answer.status_code == 303
    return csrf_of(page(client))


def page(client: httpx.Client, path: str = PAGE) -> httpx.Response:
    answer = client.get(path, follow_redirects=False)
    assert answer.status_code == 200, answer.text
    return answer


def csrf_of(answer: httpx.Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', answer.text)
    assert found, answer.text
    return found.group(1)


def post(client: httpx.Client, csrf: str, **fields: Any) -> httpx.Response:
    return client.post(PAGE, data={"csrf_token": csrf, **fields}, follow_redirects=False)


def shown_token(answer: httpx.Response) -> str:
    found = re.search(r'<code id="new-token" data-token-id="([^"]+)">([^<]+)</code>', answer.text)
    assert found, answer.text
    token = html.unescape(found.group(2))
    assert TOKEN_PATTERN.fullmatch(token) and token[4:16] == found.group(1)
    return token


def row_of(answer: httpx.Response, token_id: str) -> str:
    found = re.search(rf'<tr data-token-id="{token_id}".*?</tr>', answer.text, re.S)
    assert found, answer.text
    return found.group(0)


# -- who sees the page --------------------------------------------------------------------
def test_anonymous_visitors_are_sent_to_the_login(site: httpx.Client) -> None:
    answer = site.get(PAGE, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=/settings/tokens"


def test_without_a_login_url_anonymous_visitors_get_401(framework: str, auth: PATAuth) -> None:
    with client_for(SITE_APPS[framework](auth, login_url=None)) as client:
        answer = client.get(PAGE)
        assert answer.status_code == 401 and "Log in to manage your tokens." in answer.text
        assert 'name="csrf_token"' not in answer.text


def test_the_page_after_login(site: httpx.Client) -> None:
    login(site)
    answer = page(site)
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["referrer-policy"] == "no-referrer"
    csp = answer.headers["content-security-policy"]
    nonce = re.search(r"script-src 'nonce-([^']+)'", csp)
    assert nonce and f'<script nonce="{nonce.group(1)}">' in answer.text
    assert "frame-ancestors 'none'" in csp and "form-action 'self'" in csp
    assert 'Signed in as <strong id="user">alice</strong>' in answer.text
    assert "You have no tokens yet." in answer.text
    for scope in ("repo:read", "repo:write", "tokens:manage"):
        assert re.search(rf'<input type="checkbox" name="scope" id="scope-\d" value="{scope}">', answer.text)
    assert '<option value="30" selected>30 days</option>' in answer.text
    assert "No expiration" not in answer.text  # the default policy requires an expiry


def test_a_token_without_the_manage_scope_cannot_use_the_page(site: httpx.Client, auth: PATAuth) -> None:
    token = auth.manager.create("alice", "reader", ["repo:read"]).token
    answer = site.get(PAGE, headers={"Authorization": f"Bearer {token}"}, follow_redirects=False)
    assert answer.status_code == 403 and "tokens:manage" in answer.text


# -- session users no token can belong to: the API's answer, as a page ---------------------
def assert_refused_like_the_api(answer: httpx.Response, api: httpx.Response) -> None:
    """The page's answer to a session user the API refuses: its status and message, in HTML."""
    assert answer.status_code == api.status_code, answer.text
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert answer.headers["cache-control"] == "no-store"
    assert "nonce-" in answer.headers["content-security-policy"]
    if answer.request.method != "HEAD":
        assert f'role="alert">{escape(api.json()["error_description"])}</p>' in answer.text
        assert 'name="csrf_token"' not in answer.text and "Signed in as" not in answer.text


@pytest.mark.parametrize("user", BAD_SESSION_USERS, ids=repr)
def test_a_session_user_no_token_can_belong_to_gets_the_apis_422_as_a_page(
    framework: str, auth: PATAuth, user: object, caplog: pytest.LogCaptureFixture
) -> None:
    """Every way into the page (GET, HEAD, each form, a bad CSRF token, a non-form POST)
    answers the API's 422 and changes nothing; no 500, nothing logged as an error."""
    current_user = SessionUser("alice")
    with client_for(session_user_site(framework, auth, current_user)) as client:
        csrf = csrf_of(page(client))
        token_id = shown_token(post(client, csrf, action="create", name="ci"))[4:16]
        current_user.value = user
        api = client.get("/api/tokens")
        assert api.status_code == 422 and api.json()["field"] == "user_id"
        answers = [client.get(PAGE), client.get(PAGE + "?done=renamed"), client.head(PAGE)]
        answers += [post(client, csrf, action=a, token_id=token_id, name="x") for a in (*ACTIONS, "explode")]
        answers.append(post(client, "not-the-sessions-csrf-token", action="revoke", token_id=token_id))
        answers.append(client.post(PAGE, json={"csrf_token": csrf, "action": "create", "name": "j"}))
        for answer in answers:
            assert_refused_like_the_api(answer, api)
    assert [(r.id, r.name, r.revoked_at) for r in auth.manager.list("alice", "all")] == [(token_id, "ci", None)]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_async_current_user_is_checked_on_the_page(auth: PATAuth) -> None:
    with client_for(session_user_site("starlette", auth, SessionUser("\x00", awaitable=True))) as client:
        assert_refused_like_the_api(client.get(PAGE), client.get("/api/tokens"))


@pytest.mark.parametrize("user", NO_SESSION_USERS, ids=repr)
def test_no_session_user_is_nobody_on_the_page(framework: str, auth: PATAuth, user: object) -> None:
    with client_for(session_user_site(framework, auth, SessionUser(user))) as client:
        api = client.get("/api/tokens")
        assert api.status_code == 401
        for answer in (client.get(PAGE), client.post(PAGE, data={"action": "create", "name": "x"})):
            assert answer.status_code == 401 and "Log in to manage your tokens." in answer.text


def test_a_demo_login_no_token_can_belong_to(site: httpx.Client) -> None:
    """The examples' login keeps any name; the page and the API answer 422 for a NUL in it."""
    assert site.post("/login", data={"username": "\x00bob"}, follow_redirects=False).status_code == 303
    assert_refused_like_the_api(site.get(PAGE, follow_redirects=False), site.get("/api/tokens"))


# -- create -------------------------------------------------------------------------------
def test_create_shows_the_token_once(site: httpx.Client, auth: PATAuth, clock: FakeClock) -> None:
    csrf = login(site)
    answer = site.post(
        PAGE,
        data={
            "csrf_token": csrf,
            "action": "create",
            "name": "laptop",
            "description": "my laptop",
            "expiration": "7",
            "scope": ["repo:read", "repo:write"],
        },
    )
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    token = shown_token(answer)
    assert 'id="copy-token"' in answer.text and "navigator.clipboard.writeText" in answer.text
    again = page(site)
    assert token not in again.text and token[16:-6] not in again.text
    row = row_of(again, token[4:16])
    assert "laptop" in row and "repo:read" in row and 'data-state="active"' in row
    assert "<td>never</td>" in row  # last used
    principal = auth.verify(token)
    assert principal.user_id == "alice" and principal.scopes == frozenset({"repo:read", "repo:write"})
    record = auth.manager.get(principal.token_id)
    assert record.expires_at == clock.datetime + timedelta(days=7) and record.description == "my laptop"


def test_create_with_a_custom_date_and_free_text_scopes(framework: str, tmp_path: Any) -> None:
    auth = PATAuth(SQLiteStore(tmp_path / "t.db"), hasher=FAST_ARGON2, clock=FakeClock())
    try:
        with client_for(SITE_APPS[framework](auth, available_scopes=())) as client:
            csrf = login(client)
            assert 'id="scopes" name="scopes"' in page(client).text
            fields = {"action": "create", "name": "dated", "expiration": "custom", "expires_on": "2026-01-10"}
            answer = post(client, csrf, **fields, scopes="b a  a")
            token = shown_token(answer)
            record = auth.manager.get(token[4:16])
            assert record.scopes == ("a", "b") and record.expires_at.isoformat() == "2026-01-10T23:59:59+00:00"
            missing = post(client, csrf, action="create", name="x", expiration="custom", expires_on="")
            assert missing.status_code == 422 and "Pick an expiry date." in missing.text
            bad = post(client, csrf, action="create", name="x", expiration="custom", expires_on="10/01/2026")
            assert bad.status_code == 422 and "RFC 3339" in bad.text
            for odd in ("²", "٣", "-1", "9999999", "1e3"):  # never a 500
                answer = post(client, csrf, action="create", name="odd", expiration=odd)
                assert answer.status_code == 422, odd
            far = post(client, csrf, action="create", name="x", expiration="custom", expires_on="9999-12-31")
            assert far.status_code == 422
    finally:
        auth.close()


def test_create_errors_keep_the_form(site: httpx.Client, auth: PATAuth) -> None:
    csrf = login(site)
    answer = post(site, csrf, action="create", name=" ", description="kept <b>", scope="repo:write", expiration="60")
    assert answer.status_code == 422
    assert 'role="alert">the name must be a non-empty string' in answer.text
    assert ">kept &lt;b&gt;</textarea>" in answer.text
    assert 'value="repo:write" checked' in answer.text
    assert '<option value="60" selected>' in answer.text
    post(site, csrf, action="create", name="dup")
    taken = post(site, csrf, action="create", name="dup")
    assert taken.status_code == 409 and "already exists" in taken.text
    far = post(site, csrf, action="create", name="far", expiration="999")
    assert far.status_code == 422 and "366 days" in far.text
    odd = post(site, csrf, action="create", name="odd", expiration="soon")
    assert odd.status_code == 422 and "expires_in_days" in odd.text
    assert [r.name for r in auth.manager.list("alice", "all")] == ["dup"]


def test_everything_is_escaped(site: httpx.Client, auth: PATAuth) -> None:
    csrf = login(site, 'eve"><script>alert(1)</script>')
    hostile = "<img src=x onerror=alert(1)>"
    answer = post(site, csrf, action="create", name=hostile, description="</textarea><script>x</script>")
    assert answer.status_code == 200
    listing = page(site).text
    for text in (answer.text, listing):
        assert hostile not in text and "<script>alert(1)</script>" not in text and "<script>x</script>" not in text
        assert escape(hostile) in text


# -- CSRF -----------------------------------------------------------------------------------
@pytest.mark.parametrize("csrf", [None, "", "forged-value-forged-value-forged-value-1234"])
def test_forms_need_the_sessions_csrf_token(site: httpx.Client, auth: PATAuth, csrf: str | None) -> None:
    login(site)
    data = {"action": "create", "name": "csrf"}
    if csrf is not None:
        data["csrf_token"] = csrf
    answer = site.post(PAGE, data=data, follow_redirects=False)
    assert answer.status_code == 403 and "reload and try again" in answer.text
    assert auth.manager.list("alice", "all") == []


def test_a_csrf_token_is_bound_to_its_session(framework: str, auth: PATAuth) -> None:
    with client_for(SITE_APPS[framework](auth)) as alice, client_for(SITE_APPS[framework](auth)) as bob:
        alice_csrf = login(alice, "alice")
        login(bob, "bob")
        answer = post(bob, alice_csrf, action="create", name="cross")
        assert answer.status_code == 403
        assert auth.manager.list("bob", "all") == []


def test_a_token_on_the_page_hands_out_only_scopes_it_holds(site: httpx.Client, auth: PATAuth) -> None:
    """The API's rule holds on the page too: a managing token cannot mint, rotate or
    loosen a broader token through the forms."""
    manager = auth.manager.create("alice", "manager", ["tokens:manage", "repo:read"]).token
    admin = auth.manager.create("alice", "admin token", ["admin"])
    headers = {"Authorization": f"Bearer {manager}"}
    csrf = csrf_of(site.get(PAGE, headers=headers))
    for fields in (
        {"action": "create", "name": "escalated", "scope": "admin", "expiration": "30"},
        {"action": "rotate", "token_id": admin.record.id},
        {"action": "rename", "token_id": admin.record.id, "name": "renamed"},
    ):
        answer = site.post(PAGE, data={"csrf_token": csrf, **fields}, headers=headers, follow_redirects=False)
        assert answer.status_code == 403, (fields, answer.text)
        assert "pat_" not in answer.text.replace(manager[:4], "")  # no new secret shown
    assert sorted(r.name for r in auth.manager.list("alice")) == ["admin token", "manager"]
    assert auth.manager.get(admin.record.id) == admin.record
    allowed = {"csrf_token": csrf, "action": "create", "name": "reader", "scope": "repo:read", "expiration": "30"}
    assert site.post(PAGE, data=allowed, headers=headers).status_code == 200


def test_without_a_session_the_forms_are_refused(framework: str, auth: PATAuth) -> None:
    with client_for(SITE_APPS[framework](auth, sessions=False)) as client:
        token = auth.manager.create("alice", "manager", ["tokens:manage"]).token
        headers = {"Authorization": f"Bearer {token}"}
        shown = client.get(PAGE, headers=headers)
        assert shown.status_code == 200 and "manager" in shown.text
        answer = client.post(PAGE, data={"action": "create", "name": "x", "csrf_token": ""}, headers=headers)
        assert answer.status_code == 403
        assert [r.name for r in auth.manager.list("alice")] == ["manager"]


def test_only_form_posts_are_accepted(site: httpx.Client) -> None:
    csrf = login(site)
    answer = site.post(PAGE, json={"csrf_token": csrf, "action": "create", "name": "j"})
    assert answer.status_code == 415
    assert site.put(PAGE).status_code == 405
    unknown = post(site, csrf, action="explode")
    assert unknown.status_code == 400 and "Unknown action." in unknown.text


# -- rename / rotate / revoke --------------------------------------------------------------------
def test_rename(site: httpx.Client, auth: PATAuth) -> None:
    csrf = login(site)
    token_id = shown_token(post(site, csrf, action="create", name="before"))[4:16]
    post(site, csrf, action="create", name="other")
    answer = post(site, csrf, action="rename", token_id=token_id, name="after")
    assert answer.status_code == 303 and answer.headers["location"] == "/settings/tokens?done=renamed"
    shown = page(site, answer.headers["location"])
    assert 'role="status">Token renamed.' in shown.text and "after" in row_of(shown, token_id)
    clash = post(site, csrf, action="rename", token_id=token_id, name="other")
    assert clash.status_code == 409 and "already exists" in clash.text
    assert auth.manager.get(token_id).name == "after"


def test_rotate_shows_the_new_token(site: httpx.Client, auth: PATAuth) -> None:
    csrf = login(site)
    old = shown_token(post(site, csrf, action="create", name="rot", scope="repo:read"))
    answer = post(site, csrf, action="rotate", token_id=old[4:16])
    assert answer.status_code == 200 and "Token rot rotated." in answer.text
    new = shown_token(answer)
    assert new != old and auth.verify(new).scopes == frozenset({"repo:read"})
    with pytest.raises(InvalidToken):
        auth.verify(old)
    assert 'data-state="revoked"' in row_of(page(site), old[4:16])


def test_a_token_in_its_grace_shows_rotated_with_the_grace_end(site: httpx.Client, auth: PATAuth) -> None:
    csrf = login(site)
    old = shown_token(post(site, csrf, action="create", name="deploy", scope="repo:read"))
    auth.manager.rotate(old[4:16], grace=timedelta(hours=1))
    row = row_of(page(site), old[4:16])
    assert 'data-state="rotated"' in row and "grace ends <time" in row
    assert 'name="revoke"' in row and 'name="rotate"' not in row  # revoking ends the grace now


def test_revoke(site: httpx.Client, auth: PATAuth) -> None:
    csrf = login(site)
    token = shown_token(post(site, csrf, action="create", name="bye"))
    row = row_of(page(site), token[4:16])
    assert 'data-confirm="Revoke &#39;bye&#39;? Anything using it will stop working."' in row
    answer = post(site, csrf, action="revoke", token_id=token[4:16])
    assert answer.status_code == 303 and answer.headers["location"] == "/settings/tokens?done=revoked"
    with pytest.raises(InvalidToken):
        auth.verify(token)
    after = page(site, answer.headers["location"])
    assert "Token revoked." in after.text
    row = row_of(after, token[4:16])
    assert 'data-state="revoked"' in row and "Revoke" not in row and "Rotate" not in row


def test_other_users_tokens_cannot_be_touched(site: httpx.Client, auth: PATAuth) -> None:
    bobs = auth.manager.create("bob", "bobs")
    csrf = login(site, "alice")
    assert bobs.record.id not in page(site).text
    for action in ("rename", "rotate", "revoke"):
        answer = post(site, csrf, action=action, token_id=bobs.record.id, name="mine now")
        assert answer.status_code == 404 and "No such token." in answer.text
    assert auth.verify(bobs.token).user_id == "bob" and auth.manager.get(bobs.record.id).name == "bobs"
    for bad in ("", "x" * 500):
        assert post(site, csrf, action="revoke", token_id=bad).status_code == 404


def test_store_down_page(framework: str, tmp_path: Any) -> None:
    broken = PATAuth(SQLiteStore(tmp_path / "missing" / "t.db"), hasher=FAST_ARGON2)
    try:
        with client_for(SITE_APPS[framework](broken)) as client:
            client.post("/login", data={"username": "alice"}, follow_redirects=False)
            answer = client.get(PAGE)
            assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
            assert "unavailable" in answer.text
    finally:
        broken.close()


# -- the shared renderer and page options ----------------------------------------------------------
def test_render_page_escapes_every_value(clock: FakeClock) -> None:
    evil = '"><script>alert(1)</script>'
    record = TokenRecord(
        id="AAAAAAAAAAAA",
        user_id=evil,
        name=evil,
        hash="h",
        scopes=(evil,),
        description=evil,
        created_at=clock.datetime,
        last_used_ips=(evil,),
    )
    view = View(
        user=evil,
        csrf_token=evil,
        page_url=evil,
        records=[record],
        now=clock.datetime,
        new_token=NewToken("pat_x", record),
        notice=evil,
        error=evil,
        form=CreateForm(name=evil, description=evil, scope=(evil,), scopes=evil, expires_on=evil, expiration=evil),
        title=evil,
    )
    text = render_page(view, "n0nce")
    assert "<script>alert(1)</script>" not in text
    assert text.count(escape(evil)) >= 10


def test_page_options_follow_the_policy(tmp_path: Any) -> None:
    policy = Policy(allowed_scopes={"b", "a"}, max_lifetime=timedelta(days=60), require_expiry=True)
    auth = PATAuth(SQLiteStore(tmp_path / "p.db"), hasher=FAST_ARGON2, policy=policy)
    try:
        page = SettingsPage(TokenAPI.for_auth(auth))
        assert page.scopes == {"a": "", "b": ""}
        assert page.expiry_choices == (7, 30, 60) and not page.allow_never
        free = Policy(max_lifetime=None, require_expiry=False)
        open_auth = PATAuth(SQLiteStore(tmp_path / "q.db"), hasher=FAST_ARGON2, policy=free)
        try:
            open_page = SettingsPage.for_auth(open_auth, available_scopes={"x": "the x"})
            assert open_page.allow_never and open_page.expiry_choices[-1] == 365
            assert open_page.scopes == {"x": "the x"}
        finally:
            open_auth.close()
    finally:
        auth.close()


def test_no_expiration_when_the_policy_allows_it(framework: str, tmp_path: Any) -> None:
    free = Policy(max_lifetime=None, require_expiry=False)
    auth = PATAuth(SQLiteStore(tmp_path / "free.db"), hasher=FAST_ARGON2, policy=free)
    try:
        with client_for(SITE_APPS[framework](auth)) as client:
            csrf = login(client)
            assert '<option value="never">No expiration</option>' in page(client).text
            token = shown_token(post(client, csrf, action="create", name="forever", expiration="never"))
            assert auth.manager.get(token[4:16]).expires_at is None
    finally:
        auth.close()


# -- the host app's templates ----------------------------------------------------------------
THEMED = """{% extends "pat_middleware/settings_page.html" %}
{% block theme %}{{ super() }}:root{--pat-background:#0d1117;--pat-text:#e6edf3}{% endblock %}
{% block footer %}<footer id="acme">Acme for {{ view.user }}</footer>{% endblock %}
"""


def test_a_host_template_themes_the_page_and_stays_escaped(framework: str, auth: PATAuth) -> None:
    """The host's loader is searched first: its template extends the package's, overrides the
    CSS variables (inside the nonce'd style element) and adds a footer, autoescaped too."""
    loader = DictLoader({"acme/tokens.html": THEMED})
    with client_for(SITE_APPS[framework](auth, template="acme/tokens.html", loader=loader)) as client:
        csrf = login(client, "<b>eve</b>")
        answer = page(client)
        nonce = re.search(r"style-src 'nonce-([^']+)'", answer.headers["content-security-policy"])
        assert nonce
        style = re.search(rf'<style nonce="{nonce.group(1)}">(.*?)</style>', answer.text, re.S)
        assert style and "--pat-text:#1f2328" in style.group(1) and "--pat-background:#0d1117" in style.group(1)
        assert '<footer id="acme">Acme for &lt;b&gt;eve&lt;/b&gt;</footer>' in answer.text
        token = shown_token(post(client, csrf, action="create", name="themed"))
        assert auth.verify(token).user_id == "<b>eve</b>"


def test_a_host_template_can_replace_the_page(tmp_path: Any, auth: PATAuth) -> None:
    """A host template of the package's name replaces it (a FileSystemLoader, as an app's templates folder)."""
    folder = tmp_path / "templates" / "pat_middleware"
    folder.mkdir(parents=True)
    (folder / "settings_page.html").write_text("<p>{{ view.title }}: {{ view.records | length }} {{ view.user }}</p>")
    loader = FileSystemLoader(str(tmp_path / "templates"))
    with client_for(SITE_APPS["flask"](auth, loader=loader, title="<Keys>")) as client:
        client.post("/login", data={"username": "bob"})
        assert client.get(PAGE).text == "<p>&lt;Keys&gt;: 0 bob</p>"


def test_the_documented_theme_renders(clock: FakeClock) -> None:
    """docs/management.md's themed template (its ```jinja block) extends the page as shown."""
    docs = (Path(__file__).resolve().parent.parent / "docs" / "management.md").read_text()
    found = re.search(r"```jinja\n(.*?)```", docs, re.S)
    assert found
    environment = page_environment(DictLoader({"acme/tokens.html": found.group(1)}))
    view = View(user="alice", csrf_token="c", page_url="/settings/tokens", records=[], now=clock.datetime)
    text = render_page(view, "n0nce", environment.get_template("acme/tokens.html"))
    assert "--pat-background:#0d1117" in text and "--pat-background:#fff" in text
    assert '<footer class="muted">Acme Corp · <a href="/help/tokens">Help</a></footer>' in text
    assert 'name="csrf_token" value="c"' in text and '<style nonce="n0nce">' in text


# -- fine-grained tokens: the resource picker ----------------------------------------------
def _repos(user: str) -> list[str]:
    return [f"{user}/repo-{i:02d}" for i in range(12)] + ["acme/*"]


def test_the_picker_offers_the_hosts_resources_and_creates_a_limited_token(framework: str, auth: PATAuth) -> None:
    with client_for(SITE_APPS[framework](auth, available_resources=_repos)) as client:
        csrf = login(client)
        shown = page(client).text
        assert 'id="resource-all" value="all" checked' in shown
        assert 'id="resource-filter"' in shown  # 13 choices: a filter box
        assert 'value="alice/repo-03"' in shown and 'value="acme/*"' in shown
        answer = post(
            client, csrf, action="create", name="one repo", resource_access="selected", resource=["alice/repo-03"]
        )
        token = shown_token(answer)
        record = auth.manager.get(token[4:16])
        assert record.resources == ("alice/repo-03",)
        assert "alice/repo-03" in row_of(answer, record.id) and "only" in row_of(answer, record.id)
        everything = shown_token(post(client, csrf, action="create", name="all", resource=["alice/repo-01"]))
        assert auth.manager.get(everything[4:16]).resources is None  # "All resources" wins over stray ticks
        assert "all resources" in row_of(page(client), everything[4:16])


def test_selected_with_nothing_picked_is_refused_and_the_form_kept(framework: str, auth: PATAuth) -> None:
    with client_for(SITE_APPS[framework](auth, available_resources=_repos)) as client:
        csrf = login(client)
        answer = post(client, csrf, action="create", name="keep me", resource_access="selected")
        assert answer.status_code == 422
        assert "Pick at least one resource" in answer.text
        assert 'id="resource-selected" value="selected" checked' in answer.text and 'value="keep me"' in answer.text
        assert auth.manager.list("alice") == []


def test_without_a_list_the_page_takes_resource_ids_as_text(site: httpx.Client, auth: PATAuth) -> None:
    csrf = login(site)
    shown = page(site).text
    assert 'id="resources" name="resources"' in shown and 'id="resource-filter"' not in shown
    token = shown_token(post(site, csrf, action="create", name="t", resource_access="selected", resources="a/b c:*"))
    assert auth.manager.get(token[4:16]).resources == ("a/b", "c:*")
    refused = post(site, csrf, action="create", name="bad", resource_access="selected", resources="a b*")
    assert refused.status_code == 422 and "invalid resource" in html.unescape(refused.text)


def test_the_policy_allowed_resources_fill_the_picker(framework: str, tmp_path: Path, clock: FakeClock) -> None:
    policy = Policy(allowed_resources=lambda user: ["acme/web", "acme/api"])
    auth = PATAuth(SQLiteStore(tmp_path / "t.db"), hasher=FAST_ARGON2, clock=clock, policy=policy)
    try:
        with client_for(SITE_APPS[framework](auth)) as client:
            csrf = login(client)
            shown = page(client).text
            assert 'value="acme/web"' in shown and 'id="resource-filter"' not in shown  # few: no filter box
            refused = post(client, csrf, action="create", name="x", resource_access="selected", resources="other/x")
            assert refused.status_code == 422 and "not allowed" in refused.text
    finally:
        auth.close()
