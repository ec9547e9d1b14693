"""``flask pat``, through ``app.test_cli_runner()``, on the app's real SQLite store.

The commands themselves are the ``pat`` command's (tested in depth with it);
these tests check that they run on the app's ``PATAuth`` and that what they do
is what the app's middleware then sees.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import webtest
from click.testing import Result
from flask import Flask
from flask.testing import FlaskCliRunner

from pat_middleware import PATAuth
from pat_middleware.flask import PAT, current_principal, get_auth, scopes_required
from tests.helpers import FakeClock
from tests.test_cli import fill
from tests.test_wsgi import assert_invalid_token, bearer
from tests.wsgi_fixtures import auth, token  # noqa: F401 - fixtures, defined in this module's namespace


@pytest.fixture
def app(auth: PATAuth) -> Flask:
    app = Flask(__name__)
    PAT(app, auth=auth)

    @app.get("/repos")
    @scopes_required("repo:read")
    def repos() -> dict[str, str]:
        return {"user": current_principal.user_id}

    return app


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


def create(runner: FlaskCliRunner, *args: str) -> tuple[Result, str]:
    result = runner.invoke(args=["pat", "create", *args])
    assert result.exit_code == 0, result.output
    return result, result.stdout.strip()


def test_create_prints_the_token_alone_on_stdout_and_it_works(
    runner: FlaskCliRunner, app: Flask, auth: PATAuth, clock: FakeClock
) -> None:
    result, token = create(runner, "alice", "laptop", "-s", "repo:read", "--scope", "repo:write",
                           "--expires-in", "12h", "--description", "my laptop")  # fmt: skip
    assert result.stdout == token + "\n"
    assert token.startswith("pat_") and token not in result.stderr
    record = auth.manager.get(token[4:16])
    assert (record.user_id, record.name, record.scopes) == ("alice", "laptop", ("repo:read", "repo:write"))
    assert record.description == "my laptop"
    assert record.expires_at == clock.datetime + timedelta(hours=12)
    assert record.id in result.stderr and "not shown again" in result.stderr
    assert webtest.TestApp(app).get("/repos", headers=bearer(token)).json == {"user": "alice"}


def test_create_with_cidrs_and_default_expiry(runner: FlaskCliRunner, auth: PATAuth, clock: FakeClock) -> None:
    _, token = create(runner, "alice", "office", "--cidr", "10.0.0.0/8", "--cidr", "192.0.2.0/24")
    record = auth.manager.get(token[4:16])
    assert record.allowed_cidrs == ("10.0.0.0/8", "192.0.2.0/24")
    assert record.expires_at == clock.datetime + timedelta(days=30)  # the policy's default


def test_list(runner: FlaskCliRunner, auth: PATAuth) -> None:
    _, first = create(runner, "alice", "one", "-s", "repo:read")
    _, second = create(runner, "alice", "two")
    create(runner, "bob", "other")
    auth.manager.revoke(second[4:16])
    result = runner.invoke(args=["pat", "list", "alice"])
    assert result.exit_code == 0
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "SCOPES", "STATE", "EXPIRES", "LAST", "USED"]
    assert len(lines) == 1 and lines[0].split()[:4] == [first[4:16], "one", "repo:read", "active"]
    assert first not in result.output and second not in result.output
    everything = runner.invoke(args=["pat", "list", "alice", "--state", "all", "--json"])
    rows = json.loads(everything.stdout)
    assert sorted((r["name"], r["state"]) for r in rows) == [("one", "active"), ("two", "revoked")]
    assert all("hash" not in r for r in rows)
    empty = runner.invoke(args=["pat", "list", "nobody"])
    assert (empty.exit_code, empty.stdout) == (0, "no tokens\n")


def test_revoke(runner: FlaskCliRunner, app: Flask) -> None:
    _, token = create(runner, "alice", "ci", "-s", "repo:read")
    client = webtest.TestApp(app)
    assert client.get("/repos", headers=bearer(token)).status_int == 200
    result = runner.invoke(args=["pat", "revoke", token[4:16]])
    assert result.exit_code == 0 and result.stdout.startswith(f"revoked {token[4:16]} 'ci' (alice)\n")
    assert_invalid_token(client.get("/repos", headers=bearer(token), status=401))


def test_rotate(runner: FlaskCliRunner, app: Flask, auth: PATAuth) -> None:
    _, old = create(runner, "alice", "ci", "-s", "repo:read")
    result = runner.invoke(args=["pat", "rotate", old[4:16]])
    assert result.exit_code == 0, result.output
    new = result.stdout.strip()
    assert new != old and result.stdout == new + "\n"
    client = webtest.TestApp(app)
    assert client.get("/repos", headers=bearer(new)).json == {"user": "alice"}
    assert_invalid_token(client.get("/repos", headers=bearer(old), status=401))
    # rotating the old token again is reuse: the whole family is revoked
    again = runner.invoke(args=["pat", "rotate", old[4:16]])
    assert again.exit_code == 1 and "every token of its family was revoked" in again.stderr
    assert_invalid_token(client.get("/repos", headers=bearer(new), status=401))


def test_rotate_with_grace(runner: FlaskCliRunner, app: Flask, clock: FakeClock) -> None:
    _, old = create(runner, "alice", "ci", "-s", "repo:read")
    result = runner.invoke(args=["pat", "rotate", old[4:16], "--grace", "1h", "--expires-in", "7d"])
    assert result.exit_code == 0, result.output
    client = webtest.TestApp(app)
    assert client.get("/repos", headers=bearer(old)).status_int == 200
    clock.advance(timedelta(hours=1))
    assert_invalid_token(client.get("/repos", headers=bearer(old), status=401))
    assert client.get("/repos", headers=bearer(result.stdout.strip())).status_int == 200


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["create", "alice", "x", "--expires-in", "soon"], 2, "invalid duration 'soon'"),
        (["create", "alice", "x", "--expires-in", "400d"], 2, "the expiry may be at most 366 days away"),
        (["create", "alice", "x", "-s", "bad scope"], 2, "invalid scope 'bad scope'"),
        (["revoke", "nope"], 1, "Error: no token with id 'nope'"),
        (["rotate", "nope"], 1, "Error: no token with id 'nope'"),
        (["list", "alice", "--state", "weird"], 2, "Invalid value for '--state'"),
    ],
)
def test_bad_input_is_a_one_line_error(runner: FlaskCliRunner, args: list[str], code: int, message: str) -> None:
    result = runner.invoke(args=["pat", *args])
    assert result.exit_code == code, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output and result.stdout == ""


def test_name_taken(runner: FlaskCliRunner) -> None:
    create(runner, "alice", "ci")
    result = runner.invoke(args=["pat", "create", "alice", "ci"])
    assert (result.exit_code, result.stderr) == (1, "Error: a token named 'ci' already exists\n")


def test_commands_use_the_configured_store_not_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAT_STORE_URL", f"sqlite:///{tmp_path}/from_env.db")
    app = Flask(__name__)
    app.config["PAT_STORE_URL"] = f"sqlite:///{tmp_path}/configured.db"
    PAT(app)
    runner = app.test_cli_runner()
    _, token = create(runner, "alice", "ci")
    assert (tmp_path / "configured.db").exists() and not (tmp_path / "from_env.db").exists()
    # the app's PATAuth stays open after the command: the app can verify the token
    with app.app_context():
        assert get_auth().verify(token).user_id == "alice"
        get_auth().close()


@pytest.mark.parametrize(
    "args",
    [
        ["show", "ID", "T"],
        ["expire", "ID", "--in", "T"],
        ["expire", "ID", "--at", "T"],
        ["create", "alice", "n", "-s", "T x"],
        ["create", "alice", "n", "--cidr", "T"],
        ["list", "alice", "--state", "T"],
        ["scan", "T"],
        ["db", "T"],
    ],
    ids=" ".join,
)
def test_errors_never_echo_a_token(runner: FlaskCliRunner, args: list[str]) -> None:
    _, token = create(runner, "alice", "pasted")
    filled = fill(args, token)
    result = runner.invoke(args=["pat", *filled])
    assert result.exit_code == 2, result.output
    assert token not in result.output and "pat_…(redacted)" in result.stderr


def test_unknown_command_never_echoes_a_token(runner: FlaskCliRunner) -> None:
    _, token = create(runner, "alice", "pasted")
    result = runner.invoke(args=["pat", token])
    assert result.exit_code == 2 and token not in result.output


def test_bad_user_id(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["pat", "create", "u\x1bx", "esc"])
    assert result.exit_code == 2 and "must not contain control characters" in result.stderr
