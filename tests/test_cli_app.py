"""``pat --app module:attr``: the CLI acts on the app's own PATAuth (hasher, policy,
table, prefixes), so it cannot disagree with the app.

Each test writes its app module into its own directory under a unique name and
runs ``pat`` there in-process (CliRunner), as ``pat --app`` is run from the
directory of the app. Stores are real: SQLite files, a fresh PostgreSQL database.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from pat_middleware import PATAuth
from pat_middleware.cli import main
from pat_middleware.core.tokens import parse
from pat_middleware.errors import InvalidToken

KEY = "app-hmac-key-0123456789abcdef"


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The test's directory as the current one; ``sys.path`` and ``sys.modules`` restored after."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    for name in [n for n in os.environ if n.startswith("PAT_")]:
        monkeypatch.delenv(name)
    yield tmp_path
    for name in set(sys.modules) - before:
        module = sys.modules.pop(name)
        auth = getattr(module, "auth", None)
        if isinstance(auth, PATAuth):
            auth.close()


def write_module(directory: Path, body: str) -> str:
    """Write ``body`` as a new module in ``directory``; its (unique) name."""
    name = f"app_{uuid.uuid4().hex[:8]}"
    (directory / f"{name}.py").write_text(textwrap.dedent(body))
    return name


def pat(args: list[str], stdin: str | None = None, env: dict[str, str] | None = None) -> Result:
    result = CliRunner().invoke(main, args, input=stdin, env=env, catch_exceptions=True)
    assert "Traceback" not in result.output + result.stderr
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def ok(args: list[str], **kwargs: Any) -> Result:
    result = pat(args, **kwargs)
    assert result.exit_code == 0, result.output
    return result


HMAC_APP = """
    from pat_middleware import HMACHasher, PATAuth, Policy
    from pat_middleware.stores import SQLiteStore

    auth = PATAuth(
        SQLiteStore("tokens.db", table={table!r}),
        hasher=HMACHasher({key!r}, key_id="k7"),
        policy=Policy(allowed_scopes=["repo:read"]),
        prefix="acme",
        revocation_poll=None,
    )
"""


def test_the_cli_uses_the_apps_hasher_policy_table_and_prefix(app_dir: Path) -> None:
    module = write_module(app_dir, HMAC_APP.format(key=KEY, table="api_tokens"))
    app = f"{module}:auth"
    token = ok(["--app", app, "create", "alice", "laptop", "-s", "repo:read"]).stdout.strip()
    assert token.startswith("acme_")
    auth = sys.modules[module].auth
    assert auth.verify(token).user_id == "alice"  # the app accepts what the CLI made
    record = auth.manager.list("alice")[0]
    assert record.hash.startswith("$hmac-sha256$k7$")
    assert ok(["--app", app, "verify"], stdin=token).stdout.startswith("valid: user=alice")

    refused = pat(["--app", app, "create", "alice", "admin", "-s", "admin"])
    assert refused.exit_code == 2 and "--scope" in refused.stderr  # the app's Policy

    (app_dir / "leak.txt").write_text(f"TOKEN={token}\n")
    scanned = pat(["--app", app, "scan", "--revoke", "leak.txt"])
    assert scanned.exit_code == 0 and "active, now revoked" in scanned.stdout
    with pytest.raises(InvalidToken):
        auth.verify(token)
    assert ok(["--app", app, "show", record.id]).stdout.count("revoked") >= 1


def test_without_app_the_hmac_key_comes_from_the_environment(app_dir: Path) -> None:
    module = write_module(app_dir, HMAC_APP.format(key=KEY, table="pat_tokens"))
    token = ok(["--app", f"{module}:auth", "create", "alice", "laptop"]).stdout.strip()
    store = ["--store", "sqlite:///tokens.db", "--prefix", "acme"]
    wrong = pat([*store, "verify"], stdin=token)  # argon2id: the app's hasher is unknown
    assert wrong.exit_code == 1 and "invalid: bad_secret" in wrong.stdout
    env = {"PAT_HMAC_KEY": KEY, "PAT_HMAC_KEY_ID": "k7"}
    assert ok([*store, "verify"], stdin=token, env=env).stdout.startswith("valid: user=alice")
    made = ok([*store, "create", "alice", "cli"], env=env).stdout.strip()
    assert sys.modules[module].auth.verify(made).token_name == "cli"  # the app accepts it
    bad = pat([*store, "list", "alice"], env={"PAT_HMAC_KEY": "short"})
    assert bad.exit_code == 1 and "PAT_HMAC_KEY is too short" in bad.stderr


def test_a_token_missing_from_the_store_names_the_store(app_dir: Path) -> None:
    module = write_module(app_dir, HMAC_APP.format(key=KEY, table="api_tokens"))
    ok(["--app", f"{module}:auth", "create", "alice", "laptop"])
    record_id = sys.modules[module].auth.manager.list("alice")[0].id
    # The app's table is not the default one: the error says which store was searched.
    missing = pat(["--store", "sqlite:///tokens.db", "revoke", record_id])
    assert missing.exit_code == 1
    assert f"no token with id {record_id!r} in SQLiteStore('tokens.db', table='pat_tokens')" in missing.stderr


def test_flask_app_and_factory(app_dir: Path) -> None:
    module = write_module(
        app_dir,
        """
        from flask import Flask
        from pat_middleware.flask import PAT

        def create_app():
            app = Flask(__name__)
            app.config["PAT_STORE_URL"] = "sqlite:///flask_tokens.db"
            app.config["PAT_REVOCATION_POLL"] = None
            PAT(app)
            return app

        app = create_app()
        """,
    )
    token = ok(["--app", f"{module}:app", "create", "bob", "ci"]).stdout.strip()
    listed = ok(["--app", f"{module}:create_app", "list", "bob", "--json"]).stdout
    assert '"name": "ci"' in listed
    via_env = ok(["verify"], stdin=token, env={"PAT_APP": module})  # module alone: auth, then app
    assert via_env.stdout.startswith("valid: user=bob")


@pytest.mark.parametrize(
    ("body", "attr", "message"),
    [
        (
            "from starlette.applications import Starlette\napp = Starlette()\n",
            "app",
            "is a Starlette/FastAPI app (starlette.applications.Starlette): it does not say which PATAuth",
        ),
        ("auth = 42\n", "auth", ":auth is a builtins.int, not a PATAuth"),
        ("def make(x):\n    return x\n", "make", ":make is a builtins.function, not a PATAuth"),
        ("def make():\n    return 'no'\n", "make", "what app_"),
        ("def make():\n    raise RuntimeError('db down')\n", "make", "make() failed: RuntimeError: db down"),
        ("from flask import Flask\napp = Flask(__name__)\n", "app", "without the PAT extension: call PAT(app)"),
        ("x = 1\n", "nothing", "has no 'nothing'"),
        ("raise ValueError('bad config')\n", "auth", "failed: ValueError: bad config"),
        ("import no_such_dependency_here\n", "auth", "failed: ModuleNotFoundError"),
    ],
)
def test_what_app_does_not_name_a_patauth_is_a_clear_error(app_dir: Path, body: str, attr: str, message: str) -> None:
    module = write_module(app_dir, body)
    result = pat(["--app", f"{module}:{attr}", "list", "alice"])
    assert result.exit_code in (1, 2)
    assert message in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line]
    assert len(lines) <= 3 and lines[-1].startswith("Error: ")  # usage line, hint, one error line


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_xyz:auth", "cannot import 'no_such_module_xyz': no such module"),
        ("mod:not-an-identifier", "is not module:attr"),
        (":auth", "is not module:attr"),
    ],
)
def test_bad_app_specs(app_dir: Path, spec: str, message: str) -> None:
    result = pat(["--app", spec, "list", "alice"])
    assert result.exit_code == 2, result.output
    assert "--app / PAT_APP" in result.stderr and message in result.stderr


def test_app_excludes_the_url_options(app_dir: Path) -> None:
    module = write_module(app_dir, HMAC_APP.format(key=KEY, table="api_tokens"))
    result = pat(["--app", f"{module}:auth", "--store", "memory://", "--cache-prefix", "x:", "list", "alice"])
    assert result.exit_code == 2
    assert "--store, --cache-prefix cannot be used with --app" in result.stderr


def test_the_default_store_is_never_created_by_a_read(app_dir: Path) -> None:
    result = pat(["revoke", "abcdefgh1234"])
    assert result.exit_code == 2
    assert "no token store at ./pat_tokens.db (the default --store)" in result.stderr
    assert not (app_dir / "pat_tokens.db").exists()


def test_postgres_app_with_a_custom_table(app_dir: Path, sqlalchemy_postgres_url: str) -> None:
    table = f"api_tokens_{uuid.uuid4().hex[:6]}"
    module = write_module(
        app_dir,
        f"""
        from pat_middleware import HMACHasher, PATAuth
        from pat_middleware.stores.sqlalchemy import SQLAlchemyStore

        def make_auth():
            store = SQLAlchemyStore({sqlalchemy_postgres_url!r}, table_name={table!r})
            return PATAuth(store, hasher=HMACHasher({KEY!r}), revocation_poll=None)
        """,
    )
    app = f"{module}:make_auth"
    init = ok(["--app", app, "db", "init"]).stdout
    assert table in init
    token = ok(["--app", app, "create", "carol", "pg"]).stdout.strip()
    key_id = parse(token).key_id
    revoked = ok(["--app", app, "revoke", key_id]).stdout
    assert revoked.startswith(f"revoked {key_id} 'pg' (carol)")
    refused = pat(["--app", app, "verify"], stdin=token)
    assert refused.exit_code == 1 and "invalid: revoked" in refused.stdout


@pytest.mark.parametrize("prefix", ["", "has space:", "caf\u00e9:", "x" * 101])
def test_cache_prefix_is_checked(app_dir: Path, prefix: str) -> None:
    result = pat(["--store", "memory://", "--cache-prefix", prefix, "list", "alice"])
    assert result.exit_code == 2
    assert "Invalid value for '--cache-prefix'" in result.stderr
    assert "printable ASCII characters without blanks" in result.stderr
    from_env = pat(["--store", "memory://", "list", "alice"], env={"PAT_CACHE_PREFIX": prefix or " "})
    assert from_env.exit_code == (2 if prefix else 0)


def test_scan_revoke_without_the_apps_hasher_fails_and_says_why(app_dir: Path) -> None:
    module = write_module(app_dir, HMAC_APP.format(key=KEY, table="pat_tokens"))
    token = ok(["--app", f"{module}:auth", "create", "alice", "leaked"]).stdout.strip()
    key_id = parse(token, "acme").key_id
    (app_dir / "leak.txt").write_text(token + "\n")
    store = ["--store", "sqlite:///tokens.db", "--prefix", "acme"]
    result = pat([*store, "scan", "--revoke", "leak.txt"])
    assert result.exit_code == 1  # not revoked: never a silent success
    assert f"leak.txt:1: acme_{key_id}… id known, hashed by another hasher: not checked" in result.stdout
    assert "could not confirm" in result.stderr and "--app" in result.stderr
    assert sys.modules[module].auth.verify(token).token_id == key_id  # still live: nothing was revoked blindly

    report = pat(["--app", f"{module}:auth", "scan", "--json", "leak.txt"])
    assert report.exit_code == 1
    data = json.loads(report.stdout)
    assert data["findings"] == [{"path": "leak.txt", "line": 1, "prefix": "acme", "key_id": key_id, "status": "active"}]
    assert (data["live_not_revoked"], data["live_id_unconfirmed"], data["tokens"]) == (1, 0, 1)
    assert token not in report.stdout


def test_an_empty_list_says_which_store_was_searched(app_dir: Path) -> None:
    ok(["--store", "sqlite:///other.db", "create", "bob", "x"])
    result = ok(["--store", "sqlite:///other.db", "list", "alice"])
    assert result.stdout == "no tokens\n"
    assert result.stderr == "(searched SQLiteStore('other.db', table='pat_tokens'))\n"
    assert ok(["--store", "sqlite:///other.db", "list", "bob"]).stderr == ""


def test_scan_revokes_a_leaked_token_still_in_its_rotation_grace(app_dir: Path) -> None:
    store = ["--store", "sqlite:///grace.db"]
    old = ok([*store, "create", "alice", "ci"]).stdout.strip()
    old_id = parse(old).key_id
    ok([*store, "rotate", old_id, "--grace", "1h"])
    (app_dir / "leak.txt").write_text(old + "\n")
    found = pat([*store, "scan", "leak.txt"])
    assert found.exit_code == 1 and f"pat_{old_id}… rotated" in found.stdout  # it still authenticates
    revoked = ok([*store, "scan", "--revoke", "leak.txt"])
    assert f"pat_{old_id}… rotated, now revoked" in revoked.stdout
    refused = pat([*store, "verify"], stdin=old)
    assert refused.exit_code == 1 and "invalid: revoked" in refused.stdout
