"""The settings page's "Security log" section and the ``inactive`` state, in Starlette and Flask.

Over :func:`tests.management_fixtures.management_store` (real SQLite once it keeps the
log, the reference MemoryStore until then), through the demo login and the page's forms.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from markupsafe import escape

from pat_middleware import MemoryStore, PATAuth, Policy
from pat_middleware.core.audit import LogEntry, LogQuery
from tests.helpers import FAST_ARGON2, FakeClock
from tests.management_apps import SITE_APPS, client_for
from tests.management_fixtures import (  # noqa: F401 - fixtures, defined in this module's namespace
    auth,
    framework,
    management_store,
)
from tests.test_settings_page import PAGE, login, page, post, row_of, shown_token


@pytest.fixture
def site(framework: str, auth: PATAuth) -> Iterator[httpx.Client]:
    with client_for(SITE_APPS[framework](auth)) as client:
        yield client


def flush(auth: PATAuth) -> None:
    assert auth.security_log is not None
    auth.security_log.flush()


def log_rows(answer: httpx.Response) -> list[str]:
    section = re.search(r'<section id="security-log">.*?</section>', answer.text, re.S)
    assert section, answer.text
    return re.findall(r'<tr class="log-entry".*?</tr>', section.group(0), re.S)


def test_the_log_shows_what_happened_on_the_page(site: httpx.Client, auth: PATAuth, clock: FakeClock) -> None:
    csrf = login(site)
    assert "Nothing has happened to your tokens yet." in page(site).text
    token = shown_token(post(site, csrf, action="create", name="laptop", scope="tokens:manage"))
    token_id = token[4:16]
    clock.advance(60)
    assert site.get("/api/tokens", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    deadline = time.monotonic() + 10
    while auth.manager.get(token_id).last_used_at is None:  # the last use is recorded off the request
        assert time.monotonic() < deadline, "the use was never recorded"
        time.sleep(0.01)
    clock.advance(60)
    assert post(site, csrf, action="revoke", token_id=token_id).status_code == 303
    flush(auth)
    rows = log_rows(page(site))
    kinds = [re.search(r'data-kind="([^"]+)"', row).group(1) for row in rows]  # type: ignore[union-attr]
    assert kinds == ["revoked", "new_address", "created"]  # newest first
    assert all(f'data-token-id="{token_id}"' in row and "laptop" in row and token_id in row for row in rows)
    assert "testclient" in rows[1] or "127.0.0.1" in rows[1]  # from where: the first use's address
    assert 'class="actor"' not in "".join(rows)  # the owner acted: no actor shown
    assert re.search(r"<time datetime=[^>]+>2026-01-01 00:02 UTC</time>", rows[0])


def test_an_administrators_action_names_the_actor(site: httpx.Client, auth: PATAuth, clock: FakeClock) -> None:
    csrf = login(site)
    token_id = shown_token(post(site, csrf, action="create", name="ci"))[4:16]
    clock.advance(1)  # entries of one moment have no order
    auth.manager.revoke(token_id, actor="admin:ops")
    flush(auth)
    newest = log_rows(page(site))[0]
    assert 'data-kind="revoked"' in newest and '<span class="actor">admin:ops</span>' in newest
    assert "(admin)" in newest  # the reason


def test_other_users_entries_are_not_shown(site: httpx.Client, auth: PATAuth) -> None:
    other = auth.manager.create("bob", "bobs-secret-name").record.id
    login(site)
    flush(auth)
    text = page(site).text
    assert other not in text and "bobs-secret-name" not in text


def test_the_log_is_escaped(site: httpx.Client, auth: PATAuth) -> None:
    hostile = "<img src=x onerror=alert(1)>"
    csrf = login(site)
    post(site, csrf, action="create", name=hostile)
    record = auth.manager.list("alice")[0]
    auth.manager.revoke(record.id, actor="admin:<script>alert(2)</script>")
    flush(auth)
    rows = "".join(log_rows(page(site)))
    assert hostile not in rows and "<script>alert(2)</script>" not in rows
    assert str(escape(hostile)) in rows and str(escape("admin:<script>alert(2)</script>")) in rows


def test_the_page_shows_the_latest_entries_only(framework: str, auth: PATAuth, clock: FakeClock) -> None:
    with client_for(SITE_APPS[framework](auth, log_entries=3)) as client:
        csrf = login(client)
        for n in range(5):
            post(client, csrf, action="create", name=f"t{n}")
            clock.advance(1)
        flush(auth)
        rows = log_rows(page(client))
        assert len(rows) == 3 and "t4" in rows[0]
    with client_for(SITE_APPS[framework](auth, log_entries=0)) as client:
        login(client)
        assert 'id="security-log"' not in page(client).text


def test_inactive_tokens_show_inactive(framework: str, tmp_path: Path, clock: FakeClock) -> None:
    policy = Policy(revoke_unused_after=timedelta(days=30))
    auth = PATAuth(management_store(tmp_path), hasher=FAST_ARGON2, clock=clock, policy=policy)
    try:
        with client_for(SITE_APPS[framework](auth)) as client:
            csrf = login(client)
            old = shown_token(post(client, csrf, action="create", name="old", expiration="90"))[4:16]
            clock.advance(timedelta(days=31))
            new = shown_token(post(client, csrf, action="create", name="new", expiration="90"))[4:16]
            listing = page(client)
            row = row_of(listing, old)
            assert 'data-state="inactive"' in row and 'class="state-inactive"' in row
            assert 'name="revoke"' in row and 'name="rotate"' not in row
            assert 'data-state="active"' in row_of(listing, new)
            assert listing.text.index(f'data-token-id="{new}"') < listing.text.index(f'data-token-id="{old}"')
    finally:
        auth.close()


class LogDownStore(MemoryStore):
    """A MemoryStore whose log cannot be read (a log table gone missing)."""

    def read_log(self, query: LogQuery) -> list[LogEntry]:
        raise ConnectionError("the log table is gone")


def test_the_tokens_show_when_the_log_cannot_be_read(framework: str, clock: FakeClock) -> None:
    auth = PATAuth(LogDownStore(), hasher=FAST_ARGON2, clock=clock)
    try:
        with client_for(SITE_APPS[framework](auth)) as client:
            csrf = login(client)
            token_id = shown_token(post(client, csrf, action="create", name="still here"))[4:16]
            listing = client.get(PAGE)
            assert listing.status_code == 200
            assert "still here" in row_of(listing, token_id)
            assert "The security log is unavailable right now." in listing.text
    finally:
        auth.close()
