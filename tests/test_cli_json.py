"""``--json`` on every command that prints records or results (real SQLite store)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from pat_middleware.cli import main


def pat_json(store: Path, *args: str, stdin: str | None = None, code: int = 0) -> Any:
    result = CliRunner().invoke(main, ["--store", f"sqlite:///{store}", *args, "--json"], input=stdin)
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def test_json_everywhere(tmp_path: Path) -> None:
    store = tmp_path / "tokens.db"
    made = pat_json(store, "create", "alice", "laptop", "-s", "repo:read")
    token, token_id = made["token"], made["record"]["id"]
    assert pat_json(store, "verify", stdin=token) == {
        "valid": True,
        "user_id": "alice",
        "token_id": token_id,
        "name": "laptop",
        "scopes": ["repo:read"],
        "expires_at": made["record"]["expires_at"],
    }
    assert pat_json(store, "rename", token_id, "desk")["name"] == "desk"
    assert pat_json(store, "expire", token_id, "--in", "2d")["id"] == token_id
    revoked = pat_json(store, "revoke", token_id)
    assert (revoked["id"], revoked["state"]) == (token_id, "revoked")
    refused = pat_json(store, "verify", stdin=token, code=1)
    assert refused == {"valid": False, "reason": "revoked", "token_id": token_id}
    other = pat_json(store, "create", "alice", "other")["record"]["id"]
    assert pat_json(store, "revoke-all", "alice", "--yes") == {"user": "alice", "revoked": [other]}
    assert set(pat_json(store, "purge", "--older-than", "0s")["purged"]) == {token_id, other}
    init = pat_json(store, "db", "init")
    assert init["schema"] == "not needed" and "SQLiteStore(" in init["store"]


def test_create_help_states_the_default_lifetime() -> None:
    shown = CliRunner().invoke(main, ["create", "--help"])
    assert shown.exit_code == 0
    text = " ".join(shown.stdout.split())
    assert "expires after the policy's default lifetime (30 days by default)" in text


def test_shell_completion_script_is_available() -> None:
    script = CliRunner().invoke(main, [], prog_name="pat", env={"_PAT_COMPLETE": "bash_source"})
    assert script.exit_code == 0 and "_PAT_COMPLETE=bash_complete" in script.stdout
