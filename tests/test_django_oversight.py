"""Oversight on ``DjangoStore`` as a Django project uses it: ``manage.py pat admin|sweep|notify``,
the admin's security-log page, the manager on PostgreSQL, and ``manage.py migrate``
upgrading a database made by migration 0001."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connections
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from pat_middleware.core.audit import LogEntry, LogQuery, entry_id
from pat_middleware.core.models import TokenRecord
from pat_middleware.core.oversight import TokenFilter
from pat_middleware.core.policy import Policy
from pat_middleware.core.query import TokenQuery
from pat_middleware.django import get_auth
from pat_middleware.django.models import Notice, SecurityLogEntry, Token
from pat_middleware.django.store import DjangoStore
from tests import django_hooks
from tests.django_support import POSTGRES, fresh_pat, postgres_or_skip  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "examples" / "django_project"
DAY = timedelta(days=1)
SQLITE = pytest.mark.django_db(transaction=True)


def _record(n: int, **fields: Any) -> TokenRecord:
    values: dict[str, Any] = {
        "id": f"D{n:011d}",
        "user_id": "42",
        "name": f"token-{n}",
        "hash": f"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${n:022d}",
        "created_at": datetime.now(UTC) - DAY,
    }
    return TokenRecord(**(values | fields))


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    call_command("pat", *args, "--json")
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def idle_policy(settings: Any, fresh_pat: None) -> None:
    settings.PAT = {**settings.PAT, "POLICY": Policy(revoke_unused_after=timedelta(days=30))}


@SQLITE
@pytest.mark.usefixtures("idle_policy")
def test_manage_py_pat_admin_sweep_and_notify(capsys: pytest.CaptureFixture[str]) -> None:
    store = DjangoStore()
    idle = _record(1, created_at=datetime.now(UTC) - 40 * DAY)
    soon = _record(2, user_id="7", scopes=("repo:write",), expires_at=datetime.now(UTC) + 3 * DAY)
    for record in (idle, soon, _record(3)):
        store.insert(record)

    listed = _json(capsys, "admin", "list", "--scope", "repo:write")
    assert [t["id"] for t in listed["tokens"]] == [soon.id]
    assert [t["id"] for t in _json(capsys, "admin", "list", "--unused-for", "30d")["tokens"]] == [idle.id]

    assert _json(capsys, "sweep", "--dry-run")["ids"] == [idle.id]
    assert _json(capsys, "sweep")["ids"] == [idle.id]
    assert Token.objects.get(pk=idle.id).revoked_at is not None

    django_hooks.calls.clear()
    assert _json(capsys, "notify", "--within", "7d", "--hook", "tests.django_hooks:remember")["notified"] == {
        "7": [soon.id]
    }
    assert _json(capsys, "notify", "--within", "7d", "--hook", "tests.django_hooks:remember")["notified"] == {}
    assert django_hooks.calls == [("7", [soon.id])]
    assert Notice.objects.filter(token_id=soon.id).count() == 1

    log = get_auth().security_log
    assert log is not None
    log.flush()  # the writer thread's next batch, now
    kept = SecurityLogEntry.objects.filter(token_id=idle.id, kind="revoked").get()
    assert kept.reason == "inactive" and (kept.actor or "").startswith("cli:")
    entries = _json(capsys, "admin", "log", "--token", idle.id)["entries"]
    assert [e["kind"] for e in entries] == ["revoked"]

    with pytest.raises(CommandError):
        call_command("pat", "admin", "list", "--state", "dormant")


@SQLITE
@pytest.mark.usefixtures("fresh_pat")
def test_manage_py_help_lists_the_oversight_commands(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("pat", "--help")
    words = capsys.readouterr().out.split()
    assert {"admin", "sweep", "notify"} <= set(words)
    with pytest.raises(CommandError, match="revoke_unused_after"):
        call_command("pat", "sweep")  # the tests' policy has no inactivity rule


@SQLITE
@pytest.mark.usefixtures("fresh_pat")
def test_the_admin_shows_the_security_log_read_only() -> None:
    at = datetime.now(UTC)
    entry = LogEntry(entry_id(at), at, "revoked", "D00000000001", "42", "admin:root", "10.0.0.1", "admin")
    DjangoStore().append_log([entry])
    client = Client()
    client.force_login(User.objects.create_superuser("root", password="pw"))
    listing = client.get("/admin/pat_middleware/securitylogentry/")
    assert listing.status_code == 200 and b"D00000000001" in listing.content
    detail = client.get(f"/admin/pat_middleware/securitylogentry/{entry.id}/change/")
    assert detail.status_code == 200 and b"admin:root" in detail.content
    assert client.get("/admin/pat_middleware/securitylogentry/add/").status_code == 403
    assert client.post(f"/admin/pat_middleware/securitylogentry/{entry.id}/delete/").status_code == 403
    assert SecurityLogEntry.objects.filter(pk=entry.id).exists()


@POSTGRES
@postgres_or_skip
@pytest.mark.usefixtures("fresh_pat")
def test_the_manager_oversees_tokens_in_postgresql(settings: Any) -> None:
    settings.PAT = {**settings.PAT, "DATABASE": "postgres"}
    manager = get_auth().manager
    made = [manager.create(user, f"ci-{user}", ["repo:read"]) for user in ("1", "2", "3")]
    page = manager.search(limit=2)
    assert len(page.records) == 2 and page.cursor is not None
    rest = manager.search(cursor=page.cursor, limit=2)
    assert {r.id for r in page.records + rest.records} == {m.record.id for m in made}
    report = manager.revoke_matching(TokenFilter(user_id="2"), actor="admin:root")
    assert report.ids == [made[1].record.id]
    log = get_auth().security_log
    assert log is not None
    log.flush()
    kinds = {e.kind for e in DjangoStore("postgres").read_log(LogQuery(limit=1000))}
    assert {"created", "revoked", "admin_action"} <= kinds
    assert not SecurityLogEntry.objects.using("default").exists()  # the configured alias only


# -- migrations --------------------------------------------------------------------------------------
def _migrate(alias: str, target: str) -> None:
    executor = MigrationExecutor(connections[alias])
    executor.migrate([("pat_middleware", target)])


@POSTGRES
@postgres_or_skip
def test_migrate_upgrades_a_0001_database_in_postgresql() -> None:
    store = DjangoStore("postgres")
    _migrate("postgres", "0001_initial")
    try:
        with connections["postgres"].cursor() as cursor:
            assert "pat_middleware_notice" not in connections["postgres"].introspection.table_names(cursor)
        store.insert(_record(9, scopes=("repo:read",)))
        _migrate("postgres", "0002_oversight")
    finally:
        _migrate("postgres", "0002_oversight")  # leave the session's database as it was
    with connections["postgres"].cursor() as cursor:
        constraints = connections["postgres"].introspection.get_constraints(cursor, "pat_middleware_token")
    assert {"pat_token_created_id", "pat_token_activity_id"} <= set(constraints)
    query = TokenQuery(now=datetime.now(UTC), scopes_any=("repo:read",), sort="-last_used_at")
    assert [r.id for r in store.search(query)] == ["D00000000009"]
    assert store.claim_notice("D00000000009", "k", datetime.now(UTC)) is True


@pytest.mark.slow
def test_manage_py_migrate_upgrades_a_0001_database(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PAT_EXAMPLE_DB": str(tmp_path / "db.sqlite3"),
        "DJANGO_SECRET_KEY": "example-tests",
        "DJANGO_SETTINGS_MODULE": "project.settings",  # not the tests' settings pytest-django exported
    }

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        return done

    manage("migrate", "pat_middleware", "0001", "-v0")  # a database of release 0.1
    token_id = manage("pat", "create", "1", "old", "-s", "repo:read").stdout.strip()[4:16]
    manage("migrate", "-v0")
    listed = json.loads(manage("pat", "admin", "list", "--scope", "repo:read", "--json").stdout)
    assert [t["id"] for t in listed["tokens"]] == [token_id]
    manage("pat", "revoke", token_id)
    log = json.loads(manage("pat", "admin", "log", "--token", token_id, "--json").stdout)
    assert [e["kind"] for e in log["entries"]] == ["revoked"]  # written by the process that revoked
    shown = manage("showmigrations", "pat_middleware").stdout
    assert "[X] 0002_oversight" in shown
