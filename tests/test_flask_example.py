"""``examples/flask_app.py``: in process through webtest, and as ``flask --app examples.flask_app``."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import webtest

from examples.flask_app import REPOS, create_app
from pat_middleware.flask import get_auth
from tests.test_wsgi import assert_bare_challenge, bearer

ROOT = Path(__file__).resolve().parent.parent


def test_example_app_routes(tmp_path: Path) -> None:
    app = create_app({"PAT_STORE_URL": f"sqlite:///{tmp_path}/tokens.db", "PAT_REALM": "example"})
    client = webtest.TestApp(app)
    manager = get_auth(app).manager
    writer = manager.create("alice", "laptop", ["repo:read", "repo:write"]).token
    reader = manager.create("bob", "ci", ["repo:read"]).token
    admin = manager.create("root", "ops", ["admin"]).token
    REPOS.clear()

    assert client.get("/").json == {"service": "example", "authenticated_as": None}
    assert client.get("/", headers=bearer(reader)).json["authenticated_as"] == "bob"
    assert_bare_challenge(client.get("/me", status=401))
    assert client.get("/me", headers=bearer(writer)).json == {
        "user": "alice", "token": "laptop", "scopes": ["repo:read", "repo:write"],
    }  # fmt: skip
    assert client.post_json("/repos", {"name": "apollo"}, headers=bearer(writer), status=201).json == {
        "created": "apollo"
    }
    client.post_json("/repos", {"name": "gemini"}, headers=bearer(reader), status=403)
    client.post_json("/repos", {}, headers=bearer(writer), status=400)
    client.post_json("/repos", [1], headers=bearer(writer), status=400)  # not an object: 400, not a 500
    client.post_json("/repos", {"name": "\ud800"}, headers=bearer(writer), status=400)
    assert client.get("/repos", headers=bearer(writer)).json == {"repos": ["apollo"]}
    assert client.get("/repos", headers=bearer(reader)).json == {"repos": []}
    assert client.get("/admin/users", headers=bearer(admin)).json == {"users": ["alice"]}
    client.get("/admin/users", headers=bearer(writer), status=403)
    assert client.get("/status", headers=bearer(admin)).json == {"status": "ok", "checked_by": "root"}
    client.get("/status", headers=bearer(reader), status=403)
    get_auth(app).close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_example_runs_with_the_flask_command(tmp_path: Path) -> None:
    env = {**os.environ, "PAT_STORE_URL": f"sqlite:///{tmp_path}/tokens.db", "PYTHONPATH": str(ROOT)}
    flask = [sys.executable, "-m", "flask", "--app", "examples.flask_app"]
    created = subprocess.run(
        [*flask, "pat", "create", "alice", "laptop", "-s", "repo:read"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    token = created.stdout.strip()
    listed = subprocess.run(
        [*flask, "pat", "list", "alice"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert token[4:16] in listed.stdout and token not in listed.stdout

    port = _free_port()
    server = subprocess.Popen(
        [*flask, "run", "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/repos", headers=bearer(token))
                response = conn.getresponse()
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.1)
        assert response.status == 200
        assert json.loads(response.read()) == {"repos": []}
        assert response.getheader("PAT-Token-Expiration", "").endswith(" UTC")
        conn.request("GET", "/repos")
        anonymous = conn.getresponse()
        assert anonymous.status == 401
        assert anonymous.getheader("WWW-Authenticate") == 'Bearer realm="api"'
        anonymous.read()
        conn.close()
    finally:
        server.terminate()
        server.wait(10)
