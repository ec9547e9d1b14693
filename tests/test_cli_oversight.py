"""``pat admin list|revoke|log``, ``pat sweep`` and ``pat notify``, in-process
through click's runner, on a real SQLite store and in a subprocess with
``PAT_*`` settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from pat_middleware import PATAuth
from pat_middleware.cli import main
from pat_middleware.core.policy import Policy
from pat_middleware.stores import SQLiteStore
from tests.helpers import FAST_ARGON2, FakeClock

DAY = timedelta(days=1)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def auth(tmp_path: Path, clock: FakeClock) -> Iterator[PATAuth]:
    policy = Policy(revoke_unused_after=timedelta(days=30), default_lifetime=timedelta(days=120))
    auth = PATAuth(SQLiteStore(tmp_path / "t.db"), hasher=FAST_ARGON2, clock=clock, policy=policy)
    yield auth
    auth.close()


def run(args: list[str], auth: PATAuth, stdin: str | None = None) -> Result:
    result = CliRunner().invoke(main, args, obj=auth, input=stdin, catch_exceptions=True)
    assert "Traceback" not in result.output
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def ok(args: list[str], auth: PATAuth, **kwargs: Any) -> Result:
    result = run(args, auth, **kwargs)
    assert result.exit_code == 0, result.output
    return result


def test_admin_list_across_users_with_filters(auth: PATAuth, clock: FakeClock) -> None:
    writer = auth.manager.create("alice", "deploy", ["repo:write"])
    clock.advance(60)
    auth.manager.create("bob", "laptop", ["repo:read"])
    table = ok(["admin", "list"], auth).stdout
    assert table.splitlines()[0].split()[:3] == ["ID", "USER", "NAME"]
    assert "alice" in table and "bob" in table
    body = json.loads(ok(["admin", "list", "--scope", "repo:write", "--json"], auth).stdout)
    assert [t["id"] for t in body["tokens"]] == [writer.record.id] and body["next_cursor"] is None
    first = json.loads(ok(["admin", "list", "--limit", "1", "--json"], auth).stdout)
    assert first["tokens"][0]["user_id"] == "bob" and first["next_cursor"]
    rest = json.loads(ok(["admin", "list", "--limit", "1", "--cursor", first["next_cursor"], "--json"], auth).stdout)
    assert [t["user_id"] for t in rest["tokens"]] == ["alice"]
    every = json.loads(ok(["admin", "list", "--limit", "1", "--all", "--json"], auth).stdout)
    assert len(every["tokens"]) == 2
    clock.advance(31 * DAY)
    idle = json.loads(ok(["admin", "list", "--unused-for", "30d", "--json"], auth).stdout)
    assert {t["state"] for t in idle["tokens"]} == {"inactive"}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["admin", "list", "--unused-for", "soon"], 2, "invalid duration"),
        (["admin", "list", "--created-before", "yesterday"], 2, "invalid date-time"),
        (["admin", "list", "--state", "dormant"], 2, "dormant"),
        (["admin", "list", "--limit", "0"], 2, "0"),
        (["admin", "list", "--cursor", "junk"], 2, "cursor"),
        (["admin", "list", "--scope", "bad scope"], 2, "invalid scope"),
        (["admin", "revoke", "--yes"], 2, "at least one filter"),
        (["admin", "log", "--kind", "verified"], 2, "verified"),
        (["admin", "log", "--cursor", "junk"], 2, "cursor"),
        (["sweep"], 2, "revoke_unused_after"),
        (["notify", "--hook", "no_such_module_here:f"], 2, "no_such_module_here"),
        (["notify", "--hook", "json"], 2, "MODULE:FUNCTION"),
        (["notify", "--hook", "json:nope"], 2, "no function"),
    ],
)
def test_bad_arguments_get_one_clear_line(
    tmp_path: Path, clock: FakeClock, args: list[str], code: int, message: str
) -> None:
    auth = PATAuth(SQLiteStore(tmp_path / "t.db"), hasher=FAST_ARGON2, clock=clock)
    try:
        result = run(args, auth)
    finally:
        auth.close()
    assert result.exit_code == code, result.output
    assert message in result.stderr


def test_admin_revoke_asks_then_revokes_and_logs(auth: PATAuth) -> None:
    old = [auth.manager.create(user, "ci", ["repo:write"]) for user in ("alice", "bob")]
    keep = auth.manager.create("carol", "ci", ["repo:read"])
    dry = json.loads(ok(["admin", "revoke", "--scope", "repo:write", "--dry-run", "--json"], auth).stdout)
    assert sorted(dry["ids"]) == sorted(n.record.id for n in old) and dry["dry_run"] is True
    refused = run(["admin", "revoke", "--scope", "repo:write"], auth, stdin="n\n")
    assert refused.exit_code == 1 and "revoke 2 token(s)?" in refused.stderr
    assert auth.verify(old[0].token).user_id == "alice"
    done = ok(["admin", "revoke", "--scope", "repo:write"], auth, stdin="y\n").stdout
    assert done.startswith("revoked 2 token(s)")
    for new in old:
        assert auth.manager.get(new.record.id).revoked_at is not None
    assert auth.manager.get(keep.record.id).revoked_at is None
    assert "no token matches" in ok(["admin", "revoke", "--scope", "repo:write"], auth).stdout
    log = json.loads(ok(["admin", "log", "--kind", "revoked", "--json"], auth).stdout)
    assert {e["actor"] for e in log["entries"]} == {f"cli:{os.environ.get('USER') or _user()}"}
    text = ok(["admin", "log", "--user", "alice"], auth).stdout
    assert "revoked" in text and "created" in text and "by=cli:" in text


def _user() -> str:
    import getpass

    return getpass.getuser()


def test_sweep_revokes_inactive_tokens(auth: PATAuth, clock: FakeClock) -> None:
    idle = auth.manager.create("alice", "idle")
    clock.advance(31 * DAY)
    assert ok(["sweep", "--dry-run"], auth).stdout.splitlines() == ["would revoke 1 inactive token(s)", idle.record.id]
    body = json.loads(ok(["sweep", "--json"], auth).stdout)
    assert body == {"dry_run": False, "count": 1, "ids": [idle.record.id]}
    assert ok(["sweep"], auth).stdout.strip() == "revoked 0 inactive token(s)"


def test_notify_calls_the_hook_once_per_window(auth: PATAuth, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "reminders.py").write_text(
        "import json, pathlib\n"
        "def send(user_id, records):\n"
        "    with open(pathlib.Path(__file__).with_name('sent.jsonl'), 'a') as out:\n"
        "        out.write(json.dumps([user_id, [r.id for r in records]]) + '\\n')\n"
        "def broken(user_id, records):\n"
        "    raise RuntimeError('smtp down')\n"
    )
    monkeypatch.chdir(tmp_path)
    soon = auth.manager.create("alice", "soon", expires_in=3 * DAY)
    auth.manager.create("bob", "later", expires_in=30 * DAY)
    assert ok(["notify", "--within", "7d", "--hook", "reminders:send"], auth).stdout.strip() == (
        "notified 1 owner(s) about 1 token(s)"
    )
    again = json.loads(ok(["notify", "--within", "7d", "--hook", "reminders:send", "--json"], auth).stdout)
    assert again == {"notified": {}, "failed": []}
    sent = [json.loads(line) for line in (tmp_path / "sent.jsonl").read_text().splitlines()]
    assert sent == [["alice", [soon.record.id]]]
    failed = run(["notify", "--within", "60d", "--hook", "reminders:broken"], auth)
    assert failed.exit_code == 1 and "the hook failed for 2 owner(s)" in failed.stderr


def test_settings_come_from_the_environment_in_a_subprocess(tmp_path: Path) -> None:
    """``pat sweep`` in a real process, the policy from ``PAT_REVOKE_UNUSED_AFTER``."""
    store = f"sqlite:///{tmp_path / 'tokens.db'}"
    env = {**os.environ, "PAT_STORE_URL": store, "PAT_REVOKE_UNUSED_AFTER": "1d", "PYTHONPATH": str(ROOT)}
    created = subprocess.run(
        [sys.executable, "-m", "pat_middleware.cli", "create", "alice", "ci", "--json"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    token_id = json.loads(created.stdout)["record"]["id"]
    swept = subprocess.run(
        [sys.executable, "-m", "pat_middleware.cli", "sweep", "--dry-run"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert swept.stdout.strip() == "would revoke 0 inactive token(s)"
    bad = subprocess.run(
        [sys.executable, "-m", "pat_middleware.cli", "sweep"],
        env={**env, "PAT_REVOKE_UNUSED_AFTER": "2h"}, capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode != 0 and "PAT_REVOKE_UNUSED_AFTER" in bad.stderr and "Traceback" not in bad.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "pat_middleware.cli", "admin", "log", "--json"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    entries = json.loads(listed.stdout)["entries"]  # newest first: the dry sweep, then the creation
    assert [(e["kind"], e["token_id"]) for e in entries] == [("admin_action", None), ("created", token_id)]
    assert entries[0]["details"] == {"action": "sweep", "count": 0, "dry_run": True}
