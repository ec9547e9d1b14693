"""The ``pat`` command: every command, its output and its bad-input paths.

Commands run in-process through click's ``CliRunner`` against a real SQLite
store (``--store``), or against a ``PATAuth`` passed as the context object
when a test needs to move the clock. ``db init`` also runs on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from pat_middleware import PATAuth
from pat_middleware.cli import COMMANDS, main, parse_duration, register_commands
from pat_middleware.core.tokens import TOKEN_PATTERN
from pat_middleware.errors import InvalidToken
from tests.helpers import FakeClock

#: The shared fixtures ``auth`` (real SQLite store, on the ``clock`` of conftest) and ``framework``,
#: imported (not ``pytest_plugins``, which would make them global and let another module's ``auth`` win).
from tests.management_fixtures import auth, framework  # noqa: F401 - fixtures, defined in this module's namespace


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tokens.db'}"


def run(args: list[str], *, store: str | None = None, obj: Any = None, stdin: str | None = None) -> Result:
    """Invoke ``pat``; never a traceback, whatever happens."""
    full = (["--store", store] if store else []) + args
    result = CliRunner().invoke(main, full, obj=obj, input=stdin, catch_exceptions=True)
    assert "Traceback" not in result.output
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def ok(args: list[str], **kwargs: Any) -> Result:
    result = run(args, **kwargs)
    assert result.exit_code == 0, result.output
    return result


def fails(args: list[str], code: int, message: str, **kwargs: Any) -> Result:
    result = run(args, **kwargs)
    assert result.exit_code == code, result.output
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()[-1]) > 0
    return result


def new_token(store: str, *args: str) -> tuple[str, str]:
    """(plaintext, id) from ``pat create``."""
    result = ok(["create", "alice", *args], store=store)
    token = result.stdout.strip()
    assert TOKEN_PATTERN.fullmatch(token)
    return token, token[4:16]


# -- durations -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("15m", timedelta(minutes=15)),
        ("90s", timedelta(seconds=90)),
        ("2w", timedelta(weeks=2)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("1w2d3h4m5s", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)),
        (" 1D ", timedelta(days=1)),
        ("0s", timedelta(0)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "d", "1x", "1d1d", "-1d", "1.5h", "1 d", "d1", "99999999999999w"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


# -- create ----------------------------------------------------------------------------
def test_create_prints_the_token_alone_on_stdout(store_url: str) -> None:
    result = ok(
        ["create", "alice", "ci", "-s", "repo:read", "--scope", "user", "--expires-in", "1d12h", "--description", "x"],
        store=store_url,
    )
    token = result.stdout.strip()
    assert result.stdout == token + "\n" and TOKEN_PATTERN.fullmatch(token)
    assert "not shown again" in result.stderr and token not in result.stderr
    shown = json.loads(ok(["show", token[4:16], "--json"], store=store_url).stdout)
    assert shown["scopes"] == ["repo:read", "user"] and shown["description"] == "x"
    created = datetime.fromisoformat(shown["created_at"])
    assert datetime.fromisoformat(shown["expires_at"]) - created == timedelta(days=1, hours=12)


def test_create_json_and_options(store_url: str) -> None:
    day = (datetime.now(UTC) + timedelta(days=10)).date().isoformat()
    result = ok(["create", "alice", "net", "--expires-at", day, "--cidr", "10.0.0.0/8", "--json"], store=store_url)
    body = json.loads(result.stdout)
    assert set(body) == {"token", "record"} and TOKEN_PATTERN.fullmatch(body["token"])
    assert body["record"]["allowed_cidrs"] == ["10.0.0.0/8"]
    assert "hash" not in body["record"]
    assert body["record"]["expires_at"] == f"{day}T00:00:00+00:00"


def test_create_expires_at_within_the_policy(auth: PATAuth, clock: FakeClock) -> None:
    at = (clock.datetime + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%S")
    body = json.loads(ok(["create", "alice", "x", "--expires-at", at, "--json"], obj=auth).stdout)
    assert body["record"]["expires_at"] == (clock.datetime + timedelta(days=3)).isoformat()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--expires-in", "3q"], "invalid duration '3q'"),
        (["--expires-in", "0s"], "expiry must be in the future"),
        (["--expires-at", "tomorrow"], "invalid date-time"),
        (["--expires-at", "2000-01-01T00:00:00Z"], "expiry must be in the future"),
        (["--never-expires"], "must have an expiry"),
        (["--expires-in", "1d", "--never-expires"], "only one of"),
        (["--expires-in", "400d"], "at most 366 days"),
        (["-s", "bad scope"], "invalid scope 'bad scope'"),
        (["--cidr", "10.0.0.0/40"], "invalid CIDR"),
        (["--description", "d" * 1001], "at most 1000 characters"),
    ],
)
def test_create_bad_input_is_a_usage_error(store_url: str, args: list[str], message: str) -> None:
    fails(["create", "alice", "ci", *args], 2, message, store=store_url)


def test_create_bad_name_and_taken_name(store_url: str) -> None:
    fails(["create", "alice", "  "], 2, "name must be a non-empty string", store=store_url)
    fails(["create", "", "ci"], 2, "user_id must not be empty or blank", store=store_url)
    new_token(store_url, "ci")
    fails(["create", "alice", "ci"], 1, "already exists", store=store_url)


# -- list / show ---------------------------------------------------------------------------
def test_list_table_json_and_states(store_url: str) -> None:
    assert ok(["list", "alice"], store=store_url).stdout == "no tokens\n"
    token, token_id = new_token(store_url, "one", "-s", "repo:read")
    _, gone = new_token(store_url, "two")
    ok(["revoke", gone], store=store_url)
    table = ok(["list", "alice"], store=store_url).stdout.splitlines()
    assert table[0].split() == ["ID", "NAME", "SCOPES", "STATE", "EXPIRES", "LAST", "USED"]
    assert len(table) == 2 and table[1].startswith(token_id) and "repo:read" in table[1]
    assert token not in "\n".join(table)
    everything = json.loads(ok(["list", "alice", "--state", "all", "--json"], store=store_url).stdout)
    assert {r["id"]: r["state"] for r in everything} == {token_id: "active", gone: "revoked"}
    revoked = json.loads(ok(["list", "alice", "--state", "revoked", "--json"], store=store_url).stdout)
    assert [r["id"] for r in revoked] == [gone]
    fails(["list", "alice", "--state", "bogus"], 2, "Invalid value for '--state'", store=store_url)


def test_show(store_url: str) -> None:
    token, token_id = new_token(store_url, "shown", "-s", "a", "-s", "b")
    text = ok(["show", token_id], store=store_url).stdout
    assert re.search(r"^name:\s+shown$", text, re.M) and re.search(r"^scopes:\s+a b$", text, re.M)
    assert re.search(r"^last used:\s+never$", text, re.M)
    assert token not in text and token[16:-6] not in text
    fails(["show", "AAAAAAAAAAAA"], 1, "no token with id 'AAAAAAAAAAAA'", store=store_url)


# -- rename / expire / revoke ------------------------------------------------------------
def test_rename(store_url: str) -> None:
    _, token_id = new_token(store_url, "old")
    new_token(store_url, "taken")
    assert "renamed" in ok(["rename", token_id, "new"], store=store_url).stdout
    assert json.loads(ok(["show", token_id, "--json"], store=store_url).stdout)["name"] == "new"
    fails(["rename", token_id, "taken"], 1, "already exists", store=store_url)
    fails(["rename", token_id, ""], 2, "non-empty", store=store_url)
    fails(["rename", "nope", "x"], 1, "no token with id", store=store_url)
    ok(["revoke", token_id], store=store_url)
    fails(["rename", token_id, "again"], 1, "is revoked", store=store_url)


def test_expire(auth: PATAuth, clock: FakeClock) -> None:
    token_id = auth.manager.create("alice", "e").record.id
    assert "now expires 2026-01-08 00:00 UTC" in ok(["expire", token_id, "--in", "7d"], obj=auth).stdout
    ok(["expire", token_id, "--at", "2026-02-01T12:00:00+02:00"], obj=auth)
    assert auth.manager.get(token_id).expires_at == datetime(2026, 2, 1, 10, tzinfo=UTC)
    fails(["expire", token_id], 2, "give one of --in, --at or --never", obj=auth)
    fails(["expire", token_id, "--in", "7d", "--at", "2026-02-01"], 2, "only one of", obj=auth)
    fails(["expire", token_id, "--in", "soon"], 2, "invalid duration", obj=auth)
    fails(["expire", token_id, "--never"], 2, "must have an expiry", obj=auth)
    fails(["expire", "AAAAAAAAAAAA", "--in", "1d"], 1, "no token", obj=auth)


def test_revoke_and_revoke_all(store_url: str) -> None:
    token, token_id = new_token(store_url, "r1")
    other, _ = new_token(store_url, "r2")
    assert "revoked" in ok(["revoke", token_id], store=store_url).stdout
    assert ok(["revoke", token_id], store=store_url).exit_code == 0  # idempotent
    fails(["revoke", "AAAAAAAAAAAA"], 1, "no token", store=store_url)
    aborted = run(["revoke-all", "alice"], store=store_url, stdin="n\n")
    assert aborted.exit_code == 1 and "Aborted" in aborted.output
    assert "1 token(s)" in ok(["revoke-all", "alice"], store=store_url, stdin="y\n").stdout
    assert "0 token(s)" in ok(["revoke-all", "alice", "--yes"], store=store_url).stdout
    for plaintext in (token, other):
        refused = run(["verify"], store=store_url, stdin=plaintext)
        assert refused.exit_code == 1 and refused.stdout.startswith("invalid: revoked")


# -- rotate ---------------------------------------------------------------------------
def test_rotate(auth: PATAuth, clock: FakeClock) -> None:
    old = auth.manager.create("alice", "rot", ["repo:read"])
    result = ok(["rotate", old.record.id, "--grace", "1h", "--expires-in", "2d"], obj=auth)
    new = result.stdout.strip()
    assert TOKEN_PATTERN.fullmatch(new) and "not shown again" in result.stderr
    assert auth.verify(new).scopes == frozenset({"repo:read"})
    assert auth.verify(old.token).user_id == "alice"  # grace
    clock.advance(timedelta(hours=1, seconds=1))
    with pytest.raises(InvalidToken):
        auth.verify(old.token)
    fails(["rotate", old.record.id], 1, "every token of its family was revoked", obj=auth)
    with pytest.raises(InvalidToken):
        auth.verify(new)
    fails(["rotate", "AAAAAAAAAAAA"], 1, "no token", obj=auth)
    fails(["rotate", "x", "--grace", "soon"], 2, "invalid duration", obj=auth)


def test_rotate_json(store_url: str) -> None:
    _, token_id = new_token(store_url, "j")
    body = json.loads(ok(["rotate", token_id, "--json"], store=store_url).stdout)
    assert body["record"]["rotated_from"] == token_id and TOKEN_PATTERN.fullmatch(body["token"])


# -- verify ---------------------------------------------------------------------------
def test_verify_reads_stdin(auth: PATAuth) -> None:
    new = auth.manager.create("alice", "v", ["b", "a"])
    out = ok(["verify"], obj=auth, stdin=new.token + "\n").stdout
    assert out.startswith(f"valid: user=alice token={new.record.id} name='v' scopes=a b expires=")
    assert new.token not in out
    auth._background.shutdown()  # wait for any deferred last-used write
    assert auth.manager.get(new.record.id).last_used_at is None  # an operator's check is not a use


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"), "malformed"),
        (lambda t: "not a token", "malformed"),
    ],
)
def test_verify_invalid(auth: PATAuth, mutate: Any, reason: str) -> None:
    token = auth.manager.create("alice", "v").token
    result = run(["verify"], obj=auth, stdin=mutate(token))
    assert result.exit_code == 1 and result.stdout.strip() == f"invalid: {reason}"


def test_verify_wrong_secret_revoked_and_cidr(auth: PATAuth) -> None:
    from pat_middleware.core.tokens import checksum

    new = auth.manager.create("alice", "v", allowed_cidrs=["10.0.0.0/8"])
    head = new.token[:-6]
    forged = head[:-1] + ("A" if head[-1] != "A" else "B")
    result = run(["verify"], obj=auth, stdin=forged + checksum(forged))
    assert result.exit_code == 1 and result.stdout.strip() == f"invalid: bad_secret (token id {new.record.id})"
    assert run(["verify"], obj=auth, stdin=new.token).stdout.startswith("invalid: ip_not_allowed")
    assert ok(["verify", "--ip", "10.1.1.1"], obj=auth, stdin=new.token).stdout.startswith("valid:")
    auth.manager.revoke(new.record.id)
    assert run(["verify", "--ip", "10.1.1.1"], obj=auth, stdin=new.token).stdout.startswith("invalid: revoked")


def test_verify_refuses_a_token_on_the_command_line(auth: PATAuth) -> None:
    token = auth.manager.create("alice", "argv").token
    result = fails(["verify", token], 2, "reads the token from stdin", obj=auth)
    assert token not in result.output
    result = fails(["verify", "--ip", token], 2, "not an IP address", obj=auth, stdin=token)
    assert token not in result.output
    fails(["verify"], 2, "no token on stdin", obj=auth, stdin="  \n")


# -- expiring / purge ------------------------------------------------------------------
def test_expiring(auth: PATAuth, clock: FakeClock) -> None:
    soon = auth.manager.create("alice", "soon", expires_in=timedelta(days=2)).record.id
    auth.manager.create("alice", "later", expires_in=timedelta(days=20))
    bobs = auth.manager.create("bob", "soon", expires_in=timedelta(days=3)).record.id
    ids = {r["id"] for r in json.loads(ok(["expiring", "--json"], obj=auth).stdout)}
    assert ids == {soon, bobs}
    only_alice = json.loads(ok(["expiring", "--within", "1w", "--user", "alice", "--json"], obj=auth).stdout)
    assert [r["id"] for r in only_alice] == [soon]
    table = ok(["expiring", "--within", "30d"], obj=auth).stdout
    assert table.count("\n") == 4 and "later" in table
    fails(["expiring", "--within", "week"], 2, "invalid duration", obj=auth)


def test_purge(auth: PATAuth, clock: FakeClock) -> None:
    old = auth.manager.create("alice", "old").record.id
    auth.manager.revoke(old)
    keep = auth.manager.create("alice", "keep").record.id
    clock.advance(timedelta(days=10))
    assert ok(["purge"], obj=auth).stdout == "purged 0 token(s)\n"  # default: older than 30 days
    assert ok(["purge", "--older-than", "1w"], obj=auth).stdout == "purged 1 token(s)\n"
    assert [r.id for r in auth.manager.list("alice", "all")] == [keep]
    fails(["purge", "--older-than", "-1d"], 2, "invalid duration", obj=auth)


def test_purge_dry_run(auth: PATAuth, clock: FakeClock) -> None:
    revoked = auth.manager.create("alice", "revoked").record.id
    auth.manager.revoke(revoked)
    expired = auth.manager.create("bob", "expired", expires_in=timedelta(days=1)).record.id
    keep = auth.manager.create("alice", "keep").record.id
    clock.advance(timedelta(days=10))
    before = {r.id: r for user in ("alice", "bob") for r in auth.manager.list(user, "all")}
    assert ok(["purge", "--older-than", "30d", "--dry-run"], obj=auth).stdout == "would purge 0 token(s)\n"
    text = ok(["purge", "--older-than", "1w", "--dry-run"], obj=auth).stdout
    head, *lines = text.splitlines()
    assert head == "would purge 2 token(s)" and sorted(lines) == sorted([revoked, expired])
    listed = json.loads(ok(["purge", "--older-than", "1w", "--dry-run", "--json"], obj=auth).stdout)["would_purge"]
    assert sorted(listed) == sorted([revoked, expired])
    after = {r.id: r for user in ("alice", "bob") for r in auth.manager.list(user, "all")}
    assert after == before  # the dry run deleted nothing
    purged = json.loads(ok(["purge", "--older-than", "1w", "--json"], obj=auth).stdout)["purged"]
    assert sorted(purged) == sorted(listed)
    assert [r.id for r in auth.manager.list("alice", "all")] == [keep] and auth.manager.list("bob", "all") == []


# -- scan -----------------------------------------------------------------------------
def test_scan_reports_and_revokes(tmp_path: Path, store_url: str) -> None:
    live, live_id = new_token(store_url, "leaked")
    dead, dead_id = new_token(store_url, "dead")
    ok(["revoke", dead_id], store=store_url)
    from pat_middleware.core.tokens import checksum, generate

    unknown, _ = generate("pat")
    forged_head = live[:-6][:-1] + ("A" if live[-7] != "A" else "B")
    forged = forged_head + checksum(forged_head)
    other_prefix, _ = generate("ghp")
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / ".git").mkdir()
    (repo / "src" / "settings.py").write_text(f"# config\nTOKEN = '{live}'\nOLD = '{dead}'\n")
    (repo / "notes.txt").write_text(f"{unknown}\n\n{forged} {live}\n{other_prefix}\n")
    (repo / ".git" / "config").write_text(live)
    (repo / "binary.bin").write_bytes(b"\x00\xff" + live.encode() + b"\x00")

    result = run(["scan", str(repo)], store=store_url)
    assert result.exit_code == 1  # a live token is out there
    lines = result.stdout.splitlines()
    for secret in (live, dead, unknown, forged):
        assert secret not in result.output and secret[16:-6] not in result.output
    assert f"{repo / 'src' / 'settings.py'}:2: pat_{live_id}… active" in lines
    assert f"{repo / 'src' / 'settings.py'}:3: pat_{dead_id}… revoked" in lines
    assert f"{repo / 'notes.txt'}:1: pat_{unknown[4:16]}… not in the store" in lines
    assert f"{repo / 'notes.txt'}:3: pat_{live_id}… id known, secret does not match (not revoked)" in lines
    assert f"{repo / 'binary.bin'}:1: pat_{live_id}… active" in lines
    assert not any(".git" in line for line in lines)
    assert not any("ghp_" in line for line in lines)
    assert "occurrence(s)" in result.stderr

    with_any = run(["scan", str(repo / "notes.txt"), "--any-prefix"], store=store_url)
    assert f"{repo / 'notes.txt'}:4: ghp_{other_prefix[4:16]}… other prefix, not checked" in with_any.stdout

    revoked = ok(["scan", str(repo), "--revoke"], store=store_url)
    assert revoked.stdout.count("active, now revoked") == 3
    assert json.loads(ok(["show", live_id, "--json"], store=store_url).stdout)["state"] == "revoked"
    assert ok(["scan", str(repo)], store=store_url).exit_code == 0


def test_scan_bad_paths(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fails(["scan"], 2, "Missing argument", store=store_url)
    fails(["scan", str(tmp_path / "nope")], 2, "does not exist", store=store_url)
    unreadable = tmp_path / "secret.txt"
    unreadable.write_text("x")
    unreadable.chmod(0)
    big = tmp_path / "big.log"
    big.write_bytes(b"x" * 2048)
    monkeypatch.setattr("pat_middleware.cli.scan.SCAN_MAX_BYTES", 1024)
    result = ok(["scan", str(tmp_path)], store=store_url)
    assert f"{big}: skipped (larger than" in result.stderr
    if os.geteuid() != 0:  # root reads anything
        assert f"{unreadable}: cannot read" in result.stderr


# -- stores, db init, loaders ---------------------------------------------------------------
def test_store_from_the_environment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    result = CliRunner(env={"PAT_STORE_URL": url}).invoke(main, ["create", "alice", "env"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "env.db").exists()
    listed = CliRunner(env={"PAT_STORE_URL": url}).invoke(main, ["list", "alice", "--json"])
    assert [r["name"] for r in json.loads(listed.stdout)] == ["env"]


@pytest.mark.parametrize(
    ("url", "code", "message"),
    [
        ("bogus://x", 2, "unsupported store URL scheme 'bogus'"),
        ("not a url", 2, "not a store URL"),
        ("sqlite://host/x.db", 2, "three slashes"),
        ("sqlite:////nonexistent-dir/x.db", 1, "store is unavailable"),
        ("postgresql://postgres@127.0.0.1:1/test", 1, "unavailable"),
    ],
)
def test_missing_or_bad_store(url: str, code: int, message: str) -> None:
    result = fails(["list", "alice"], code, message, store=url)
    assert "password" not in result.output


def test_db_init_sqlite(store_url: str) -> None:
    assert "needs no schema" in ok(["db", "init"], store=store_url).stdout


@pytest.mark.postgres
def test_db_init_postgres(postgres_url: str) -> None:
    """``db init`` on an empty database of its own (the session database's tables stay untouched)."""
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    name = f"pat_cli_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(postgres_url)
    url = urlunsplit(("postgresql+psycopg", parts.netloc, "/" + name, "", ""))
    try:
        fails(["list", "alice"], 1, "pat db init", store=url)
        init = ok(["db", "init"], store=url).stdout
        assert init.startswith("schema ready: SQLAlchemyStore(") and name in init and "pat_tokens" in init
        assert "schema ready" in ok(["db", "init"], store=url).stdout  # idempotent
        ok(["create", "alice", "pg"], store=url)
        assert "pg" in ok(["list", "alice"], store=url).stdout
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    fails(["db", "init"], 1, "database is unavailable", store="postgresql://postgres@127.0.0.1:1/test")


def test_register_commands_on_another_group(auth: PATAuth) -> None:
    calls: list[int] = []

    def load() -> PATAuth:
        calls.append(1)
        return auth

    group = register_commands(click.Group("tokens"), load_auth=load)
    assert set(group.commands) == {c.name for c in COMMANDS}
    runner = CliRunner()
    result = runner.invoke(group, ["create", "carol", "from-group"])
    assert result.exit_code == 0, result.output
    assert calls == [1]
    assert auth.manager.list("carol")[0].name == "from-group"
    shown = runner.invoke(group, ["db", "init"])  # nested groups find the loader too
    assert shown.exit_code == 0 and "needs no schema" in shown.output
    assert auth.manager.list("carol")  # the loader's auth is not closed by the commands
    bad = runner.invoke(group, ["show", "AAAAAAAAAAAA"])
    assert bad.exit_code == 1 and "no token with id" in bad.output and bad.exception is not None


def test_commands_use_a_patauth_context_object(auth: PATAuth) -> None:
    """A group that puts its PATAuth in ctx.obj (as ``flask pat`` does) needs no loader."""

    @click.group()
    @click.pass_context
    def tokens(ctx: click.Context) -> None:
        ctx.obj = auth

    register_commands(tokens)
    result = CliRunner().invoke(tokens, ["create", "dave", "obj"])
    assert result.exit_code == 0, result.output
    assert auth.manager.list("dave")[0].name == "obj"


@pytest.mark.slow
def test_demo_command_serves_the_example(tmp_path: Path) -> None:
    import httpx

    pat = Path(sys.executable).with_name("pat")
    env = {**os.environ, "PAT_STORE_URL": f"sqlite:///{tmp_path / 'demo.db'}"}
    process = subprocess.Popen(
        [str(pat), "demo", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        deadline = time.monotonic() + 20
        while "pat-middleware demo:" not in first and time.monotonic() < deadline:
            first = process.stdout.readline()
        base_url = first.split()[2]
        assert base_url.startswith("http://127.0.0.1:")
        assert httpx.get(base_url + "/health").json() == {"status": "ok"}
    finally:
        process.terminate()
        process.wait(10)


def test_token_prefix_option(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'p.db'}"
    runner = CliRunner()
    result = runner.invoke(main, ["--store", store, "--prefix", "acme", "create", "alice", "ci"])
    assert result.exit_code == 0, result.output
    assert "acme_" in result.output
    env = {"PAT_PREFIX": "acme"}
    result = runner.invoke(main, ["--store", store, "list", "alice"], env=env)
    assert result.exit_code == 0
    assert "ci" in result.output
    result = runner.invoke(main, ["--store", store, "--prefix", "Bad-Prefix", "list", "alice"])
    assert result.exit_code == 2
    assert "--prefix" in result.output
    assert "Traceback" not in result.output


# -- scan: only regular files, bounded reads, line numbers ------------------------------------
def pat_process(args: list[str], store: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``pat`` in a child process (a hang or a memory blow-up must not take the test run with it)."""
    pat = Path(sys.executable).with_name("pat")
    return subprocess.run(
        [str(pat), "--store", store, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not Path("/dev/zero").exists(), reason="needs a FIFO and /dev/zero")
def test_scan_skips_devices_and_fifos(store_url: str, tmp_path: Path) -> None:
    token, token_id = new_token(store_url, "in-file")
    tree = tmp_path / "tree"
    tree.mkdir()
    os.mkfifo(tree / "fifo")  # nobody ever writes: opening it to read would block forever
    (tree / "notes.txt").write_text(f"x {token}\n")
    (tree / "zero").symlink_to("/dev/zero")  # a symlink is followed, to what it points at
    result = pat_process(["scan", str(tree), "/dev/zero"], store_url)
    assert result.returncode == 1, result.stderr  # the live token in notes.txt
    assert f"{tree / 'notes.txt'}:1: pat_{token_id}… active" in result.stdout
    for skipped in (tree / "fifo", tree / "zero", "/dev/zero"):
        assert f"{skipped}: skipped (not a regular file)" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs /proc")
def test_scan_reads_at_most_the_limit_even_when_the_size_says_less(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    status = Path("/proc/self/status")
    assert status.stat().st_size == 0  # a regular file whose size says nothing, like one still growing
    monkeypatch.setattr("pat_middleware.cli.scan.SCAN_MAX_BYTES", 16)
    result = ok(["scan", str(status)], store=store_url)
    assert f"{status}: skipped (larger than 16 bytes)" in result.stderr


def test_scan_line_numbers_with_several_hits_per_line(store_url: str, tmp_path: Path) -> None:
    one, one_id = new_token(store_url, "one")
    two, two_id = new_token(store_url, "two")
    text = f"{one} {two} {one}\r\n\n{two}\nno token here\n\n{one},{two}\n"
    (tmp_path / "f.txt").write_text(text, newline="")
    result = run(["scan", str(tmp_path / "f.txt")], store=store_url)
    names = {one_id: "one", two_id: "two"}
    found = [(int(n), names[i]) for n, i in re.findall(r"f\.txt:(\d+): pat_(\w{12})…", result.stdout)]
    assert found == [(1, "one"), (1, "two"), (1, "one"), (3, "two"), (6, "one"), (6, "two")]
    assert "6 occurrence(s) of 2 token(s)" in result.stderr


# -- error messages never echo a token, and stay short -----------------------------------------
def fill(args: list[str], token: str) -> list[str]:
    """``args`` with the placeholders filled: ``ID`` the token's id, ``CUT`` the token
    without its last two characters, ``T`` (alone or inside a word) the token."""
    whole = {"ID": token[4:16], "CUT": token[:-2]}
    return [whole[a] if a in whole else a.replace("T", token) for a in args]


#: Commands that echo a bad value back; ``T`` is replaced by a real token, ``ID`` by its id.
ECHOING = [
    ["scan", "T"],
    ["show", "ID", "T"],
    ["expire", "ID", "--in", "T"],
    ["expire", "ID", "--at", "T"],
    ["create", "alice", "n", "-s", "T x"],
    ["create", "alice", "n", "--cidr", "T"],
    ["create", "alice", "n", "--expires-in", "xT"],
    ["T"],
    ["list", "alice", "--state", "T"],
    ["db", "T"],
    ["create", "alice", "n", "--expires-in", "CUT"],  # a token missing its checksum still holds the secret
    ["--prefix", "T", "list", "alice"],
]


@pytest.mark.parametrize("args", ECHOING, ids=" ".join)
def test_errors_never_echo_a_token(store_url: str, args: list[str]) -> None:
    token, _ = new_token(store_url, "pasted")
    filled = fill(args, token)
    result = run(filled, store=store_url)
    assert result.exit_code == 2, result.output
    assert token not in result.output and token[16:48] not in result.output
    assert "pat_…(redacted)" in result.stderr


def test_errors_cut_long_values(store_url: str) -> None:
    result = fails(["create", "alice", "n", "-s", "s" * 5000], 2, "invalid scope 'sss", store=store_url)
    assert "s" * 81 not in result.stderr and "…" in result.stderr
    assert len(result.stderr) < 600


def test_redact() -> None:
    from pat_middleware.cli import redact
    from pat_middleware.core.tokens import generate

    token, _ = generate("acme")
    assert redact(f"bad '{token}'") == "bad 'acme_…(redacted)'"
    assert token[5:] not in redact(f"glued X{token}Y")
    assert redact("postgresql://u:hunter2@db/x and redis://:pw@r") == "postgresql://u:***@db/x and redis://:***@r"
    assert redact("w" * 100) == "w" * 79 + "…"
    assert len(redact("a " * 1000)) == 400


# -- options by their names --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["expiring", "--within", "99999999d"], "Invalid value for '--within': duration '99999999d' is too long"),
        (["purge", "--older-than", "99999999d"], "Invalid value for '--older-than': duration '99999999d' is too"),
        (["create", "a", "b", "--expires-in", "36501d"], "at most 36500d"),
        (
            ["create", "a", "b", "--expires-at", "2030-01-01", "--expires-in", "3d"],
            "give only one of --expires-in, --expires-at or --never-expires",
        ),
        (["create", "a", "b", "--never-expires", "--expires-in", "3d"], "only one of --expires-in"),
        (["expire", "AAAAAAAAAAAA", "--in", "1d", "--at", "2030-01-01"], "give only one of --in, --at or --never"),
    ],
)
def test_messages_name_the_options(store_url: str, args: list[str], message: str) -> None:
    result = fails(args, 2, message, store=store_url)
    assert not re.search(r"(?<![-\w])(within|older_than|expires_in|expires_at|never_expires)\b", result.stderr)


@pytest.mark.parametrize("text", ["\u0663d", "1d\u0663h", "\uff13d", "\u09e7d"])  # Arabic-Indic, fullwidth, Bengali
def test_durations_take_ascii_digits_only(store_url: str, text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)
    fails(["create", "alice", "n", "--expires-in", text], 2, "invalid duration", store=store_url)
    assert ok(["list", "alice"], store=store_url).stdout == "no tokens\n"


# -- user ids ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("user", "message"),
    [
        ("", "must not be empty or blank"),
        ("   ", "must not be empty or blank"),
        ("\t", "must not be empty or blank"),
        ("u\x1bx", "must not contain control characters"),
        ("a\nb", "must not contain control characters"),
        ("a\u200bb", "must not contain control characters"),  # zero-width space (Cf)
        ("\udcff", "must not contain control characters"),  # a non-UTF-8 byte in argv
        ("u" * 256, "at most 255 characters"),
    ],
)
def test_bad_user_ids_are_refused_by_every_command(store_url: str, user: str, message: str) -> None:
    for args in (["create", user, "n"], ["list", user], ["revoke-all", user, "--yes"], ["expiring", "--user", user]):
        result = fails(args, 2, message, store=store_url)
        assert user not in result.stderr or not user.strip()
    assert ok(["list", "alice", "--state", "all"], store=store_url).stdout == "no tokens\n"
    ok(["create", "u" * 255, "n"], store=store_url)


def test_non_utf8_argument_from_a_real_shell(store_url: str) -> None:
    pat = Path(sys.executable).with_name("pat")
    result = subprocess.run(
        [os.fsencode(str(pat)), b"--store", os.fsencode(store_url), b"create", b"\xff", b"n1"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2 and b"user_id must not contain control characters" in result.stderr, result.stderr


# -- user-controlled text cannot forge output -------------------------------------------------
def test_show_cannot_be_forged_by_a_description(auth: PATAuth) -> None:
    record = auth.manager.create("alice", "f", ["repo:read"], description="ok\nscopes:           admin:all").record
    text = ok(["show", record.id], obj=auth).stdout
    assert re.findall(r"^scopes:.*$", text, re.M) == ["scopes:           repo:read"]
    assert re.search(r"^description:\s+ok\n\s{18}scopes:           admin:all$", text, re.M)


def test_printable_escapes_what_could_drive_a_terminal() -> None:
    from pat_middleware.cli.output import printable_text

    # The library refuses most of these in new records; older records and other stores may hold them.
    assert printable_text("a\rscopes: x\x1b[2Jb\u2028c\tz") == "a\\rscopes: x\\x1b[2Jb\\u2028c\\tz"
    assert printable_text("one\ntwo") == "one\\ntwo"
    assert printable_text("one\ntw\ro", indent=4) == "one\n    tw\\ro"
    assert printable_text("\udcffé") == "\\udcffé"


def test_scan_escapes_file_names(store_url: str, tmp_path: Path) -> None:
    token, _ = new_token(store_url, "n")
    (tmp_path / "a\nfake.txt:9: pat_AAAAAAAAAAAA… revoked").write_text(token)
    result = run(["scan", str(tmp_path)], store=store_url)
    assert len(result.stdout.splitlines()) == 1 and "a\\nfake.txt" in result.stdout


# -- URLs: the right option, the driver's reason, never a password -------------------------------
def test_a_bad_cache_url_is_blamed_on_cache(store_url: str) -> None:
    result = fails(
        ["--cache", "foo://x", "list", "alice"], 2, "Invalid value for --cache / PAT_CACHE_URL", store=store_url
    )
    assert "--store" not in result.stderr


@pytest.mark.parametrize(
    "url", ["postgresql://u:hunter2@h:notaport/db", "redis://:hunter2@127.0.0.1:99999/0", "sqlite:///x.db?a=1"]
)
def test_a_bad_store_url_is_a_clear_usage_error(url: str) -> None:
    result = fails(["list", "alice"], 2, "Invalid value for --store / PAT_STORE_URL", store=url)
    assert "invalid literal" not in result.stderr and "hunter2" not in result.output


def test_store_unavailable_says_why(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}"
    fails(
        ["list", "alice"],
        1,
        "The token store is unavailable (SQLite SQLITE_CANTOPEN): OperationalError: unable",
        store=url,
    )


def _redis_db(redis_url: str, query: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(redis_url)
    path, _, extra = query.partition("?")
    return urlunsplit((parts.scheme, parts.netloc, path, extra, ""))


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("/99", "The token store is unavailable: ResponseError: DB index is out of range"),
        ("/0?bogus=1", "The token store is unavailable: TypeError: "),
    ],
)
def test_redis_store_misconfigured_says_why(redis_url: str, where: str, message: str) -> None:
    fails(["list", "alice"], 1, message, store=_redis_db(redis_url, where))


def test_redis_store_wrong_password_is_never_printed(redis_url: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(redis_url)
    url = f"redis://:hunter2-secret@{parts.hostname}:{parts.port or 6379}/0"
    result = fails(["list", "alice"], 1, "The token store is unavailable: AuthenticationError", store=url)
    assert "hunter2" not in result.output


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda p: p._replace(query="bogus=1"),
            'ProgrammingError: (psycopg.ProgrammingError) invalid connection option "bogus"',
        ),
        (lambda p: p._replace(path="/pat_no_such_db"), 'database "pat_no_such_db" does not exist'),
    ],
)
def test_postgres_misconfigured_says_why(postgres_url: str, change: Any, message: str) -> None:
    from urllib.parse import urlsplit, urlunsplit

    parts = change(urlsplit(postgres_url.replace("postgresql://", "postgresql+psycopg://", 1)))
    host = f"{parts.hostname}:{parts.port or 5432}"
    url = urlunsplit(parts._replace(netloc=f"{parts.username or 'postgres'}:hunter2@{host}"))
    result = fails(["list", "alice"], 1, message, store=url)
    assert "unavailable" in result.stderr and "hunter2" not in result.output


# -- an invalidation Redis did not get is a warning ----------------------------------------------
UNREACHABLE_CACHE = "redis://127.0.0.1:1/13"  # nothing listens on port 1


@pytest.mark.parametrize(
    "args",
    [
        ["revoke", "ID"],
        ["revoke-all", "alice", "--yes"],
        ["rotate", "ID"],
        ["rename", "ID", "new"],
        ["expire", "ID", "--in", "2d"],
    ],
    ids=lambda a: a[0],
)
def test_unsent_invalidation_is_a_warning(store_url: str, args: list[str]) -> None:
    _, token_id = new_token(store_url, "cached")
    filled = [token_id if a == "ID" else a for a in args]
    result = ok(["--cache", UNREACHABLE_CACHE, *filled], store=store_url)
    assert "Warning: the change is saved in the store" in result.stderr
    assert f"token id(s) {token_id} could not be sent to Redis" in result.stderr
    assert "change feed within their revocation_poll (5 s by default)" in result.stderr
    assert "shared_ttl + subscribed_ttl = 60 s + 300 s" in result.stderr
    assert "pat revoke ID" in result.stderr


def test_no_warning_when_redis_got_the_invalidation(store_url: str, redis_url: str, redis_prefix: str) -> None:
    _, token_id = new_token(store_url, "cached")
    result = ok(["--cache", redis_url, "--cache-prefix", redis_prefix, "revoke", token_id], store=store_url)
    assert "could not be sent" not in result.stderr  # (no listener: that warning is test_cli_listeners.py's)
    assert "Warning" not in ok(["--cache", UNREACHABLE_CACHE, "create", "alice", "new"], store=store_url).stderr


# -- demo: one-line errors -----------------------------------------------------------------------
def test_demo_cannot_start_is_one_line(store_url: str) -> None:
    pytest.importorskip("uvicorn")
    import socket

    fails(["demo", "--host", "garbage.invalid"], 2, "Invalid value for --host: cannot resolve host", store=store_url)
    fails(["demo"], 2, "Invalid value for --store / PAT_STORE_URL: unsupported store URL scheme", store="foo://x")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        fails(["demo", "--port", str(port)], 1, f"cannot listen on 127.0.0.1:{port}", store=store_url)
    assert ok(["list", "demo"], store=store_url).stdout == "no tokens\n"  # nothing minted


@pytest.mark.parametrize("store", ["memory://", "sqlite:///:memory:"])
def test_minting_into_an_in_memory_store_says_the_token_will_be_gone(store: str) -> None:
    result = ok(["create", "alice", "ephemeral"], store=store)
    assert "the store is in memory" in result.stderr


def test_a_file_store_gets_no_in_memory_note(store_url: str) -> None:
    assert "in memory" not in ok(["create", "alice", "kept"], store=store_url).stderr


def test_scan_redacts_tokens_in_file_names_only_whole_ones(store_url: str, tmp_path: Path) -> None:
    token, _ = new_token(store_url, "n")
    (tmp_path / f"leak_{token}.txt").write_text(token)
    (tmp_path / "my_configurationfile.txt").write_text(token)
    result = run(["scan", str(tmp_path)], store=store_url)
    assert token not in result.stdout + result.stderr
    assert "leak_pat_…(redacted).txt:1:" in result.stdout
    assert "my_configurationfile.txt:1:" in result.stdout  # an ordinary name is left alone


@pytest.mark.postgres
def test_a_store_failure_is_one_line_on_stderr_without_a_logging_setup(postgres_url: str) -> None:
    """The library logs the failed store call; the command's own line says it, once."""
    result = pat_process(["list", "alice"], f"{postgres_url}?badopt=1")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith("Error: The token store is unavailable: ProgrammingError")


def test_resources_on_create_show_and_change(store_url: str) -> None:
    created = ok(
        ["create", "alice", "deploy", "-s", "repo:read", "--resource", "acme/web", "--resource", "tools/*", "--json"],
        store=store_url,
    )
    record = json.loads(created.stdout)["record"]
    assert record["resources"] == ["acme/web", "tools/*"]
    token_id = record["id"]
    assert "resources:        acme/web tools/*" in ok(["show", token_id], store=store_url).stdout
    widened = ok(["resources", token_id, "--all", "--json"], store=store_url)
    assert json.loads(widened.stdout)["resources"] is None
    assert "resources:        all" in ok(["show", token_id], store=store_url).stdout
    narrowed = ok(["resources", token_id, "--resource", "acme/web", "--json"], store=store_url)
    assert json.loads(narrowed.stdout)["resources"] == ["acme/web"]
    fails(["resources", token_id], 2, "give --resource (repeatable) or --all", store=store_url)
    fails(["resources", token_id, "--all", "--resource", "x"], 2, "give --resource", store=store_url)
    fails(["create", "alice", "bad", "--resource", "has space"], 2, "resource", store=store_url)
    auth = PATAuth.from_url(store_url)
    try:
        token = auth.manager.create("alice", "plain").token
        assert auth.verify(token).resources is None
    finally:
        auth.close()


def test_show_says_when_a_rotated_tokens_grace_ends(store_url: str) -> None:
    token_id = json.loads(ok(["create", "alice", "ci", "--json"], store=store_url).stdout)["record"]["id"]
    ok(["rotate", token_id, "--grace", "1h"], store=store_url)
    shown = ok(["show", token_id], store=store_url).stdout
    assert re.search(r"state:\s+rotated \(grace ends \d{4}-\d\d-\d\d", shown), shown
