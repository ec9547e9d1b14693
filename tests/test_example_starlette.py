"""The example app under a real uvicorn process, and ``run_demo`` as users run it.

Both start a server on a free loopback port in a subprocess, talk to it over
TCP (httpx; websocket-client for the WebSocket) and stop it with a signal.
"""

from __future__ import annotations

import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from pat_middleware import PATAuth

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """A subprocess whose merged output is read by a thread, line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    def next_line(self, deadline: float) -> str:
        try:
            return self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"no output in time; so far:\n{''.join(self.output)}")

    def stop(self, sig: int) -> int:
        """Send ``sig``, wait for the exit and return its code (killing it if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"the process ignored signal {sig}; output:\n{''.join(self.output)}")

    def text(self) -> str:
        time.sleep(0.2)  # let the pump read the last lines
        return "".join(self.output)


def wait_until_up(base_url: str, process: Process) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            pytest.fail(f"the server exited with {process.proc.returncode}:\n{process.text()}")
        try:
            if httpx.get(base_url + "/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"the server did not come up in {START_TIMEOUT}s:\n{process.text()}")


@dataclass
class Server:
    base_url: str
    auth: PATAuth
    process: Process


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    store_url = f"sqlite:///{tmp_path / 'tokens.db'}"
    port = free_port()
    env = {**os.environ, "PAT_STORE_URL": store_url}
    env.pop("PAT_CACHE_URL", None)
    args = [sys.executable, "-m", "uvicorn", "examples.starlette_app:app", "--host", "127.0.0.1",
            "--port", str(port), "--ws", "wsproto", "--log-level", "info"]  # fmt: skip
    process = Process(args, env)
    auth = PATAuth.from_url(store_url)
    try:
        wait_until_up(f"http://127.0.0.1:{port}", process)
        yield Server(f"http://127.0.0.1:{port}", auth, process)
    finally:
        code = process.stop(signal.SIGTERM)
        auth.close()
    output = process.text()
    # uvicorn shuts down gracefully (lifespan included), then re-raises the signal
    assert code in (0, -signal.SIGTERM), output
    assert "Application shutdown complete." in output and "Traceback" not in output, output


def test_example_api_under_uvicorn(server: Server) -> None:
    manager = server.auth.manager
    reader = manager.create("alice", "reader", ["repo:read", "events:read"], expires_in=timedelta(days=7))
    writer = manager.create("alice", "writer", ["repo:read", "repo:write"], expires_in=timedelta(days=7)).token
    never_used = manager.create("alice", "revoked", ["repo:read"], expires_in=timedelta(days=7)).token
    manager.revoke(never_used[4:16])

    with httpx.Client(base_url=server.base_url, timeout=10.0) as http:
        auth_r = {"Authorization": f"Bearer {reader.token}"}
        auth_w = {"Authorization": f"Bearer {writer}"}
        assert http.get("/").json() == {"service": "pat-middleware example", "user": None}
        assert http.get("/", headers=auth_r).json()["user"] == "alice"

        anonymous = http.get("/repos")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == 'Bearer realm="api"'

        listed = http.get("/repos", headers=auth_r)
        assert listed.status_code == 200 and listed.json() == {"repos": []}
        expected = reader.record.expires_at.strftime("%Y-%m-%d %H:%M:%S UTC")  # type: ignore[union-attr]
        assert listed.headers["pat-token-expiration"] == expected

        refused = http.post("/repos", headers=auth_r, json={"name": "x"})
        assert refused.status_code == 403
        assert refused.headers["www-authenticate"].endswith('scope="repo:write"')
        created = http.post("/repos", headers=auth_w, json={"name": "hello-world"})
        assert created.status_code == 201
        assert http.post("/repos", headers=auth_w, content=b"not json").status_code == 400
        lone_surrogate = b'{"name": "\\ud800"}'  # valid JSON, but no response can encode it back
        assert http.post("/repos", headers=auth_w, content=lone_surrogate).status_code == 400
        assert http.get("/repos", headers=auth_w).json() == {"repos": ["hello-world"]}

        me = http.get("/user", headers=auth_w).json()
        assert me["user"] == "alice" and me["token_name"] == "writer"
        assert me["scopes"] == ["repo:read", "repo:write"]

        revoked = http.get("/repos", headers={"Authorization": f"Bearer {never_used}"})
        assert revoked.status_code == 401 and revoked.json()["error"] == "invalid_token"
        assert http.get("/repos", headers={"Authorization": "Bearer a b"}).status_code == 400

        # A token the server has verified and cached, revoked from this process: without
        # Redis the server's local cache entry lives at most local_ttl (5 s) more.
        manager.revoke(writer[4:16])
        deadline = time.monotonic() + 5.0 + 3.0
        while http.get("/user", headers=auth_w).status_code == 200:
            assert time.monotonic() < deadline, "revocation did not take effect within local_ttl"
            time.sleep(0.25)
        assert http.get("/user", headers=auth_w).status_code == 401


def test_example_websocket_under_uvicorn(server: Server) -> None:
    import websocket  # websocket-client

    token = server.auth.manager.create("bob", "ws", ["events:read"], expires_in=timedelta(days=1)).token
    url = server.base_url.replace("http://", "ws://") + "/ws/events"
    ws = websocket.create_connection(url, header=[f"Authorization: Bearer {token}"], timeout=10)
    try:
        assert ws.recv() == '{"event":"hello","user":"bob"}'
        ws.send("ping")
        assert ws.recv() == '{"event":"echo","data":"ping"}'
    finally:
        ws.close()

    reader = server.auth.manager.create("bob", "repo", ["repo:read"], expires_in=timedelta(days=1)).token
    for header, status in [([], 401), ([f"Authorization: Bearer {reader}"], 403)]:
        with pytest.raises(websocket.WebSocketBadStatusException) as denied:
            websocket.create_connection(url, header=header, timeout=10)
        assert denied.value.status_code == status  # the denial response, not a bare 403 from the server


@dataclass
class Example:
    expect: int
    method: str
    url: str
    headers: dict[str, str]
    body: str | None


def parse_curl(line: str, expect: int) -> Example:
    words = shlex.split(line)
    assert words[:2] == ["curl", "-i"], line
    method, headers, body, url = "GET", {}, None, ""
    rest = iter(words[2:])
    for word in rest:
        if word == "-X":
            method = next(rest)
        elif word == "-H":
            name, _, value = next(rest).partition(": ")
            headers[name] = value
        elif word == "-d":
            body = next(rest)
        else:
            url = word
    return Example(expect, method, url, headers, body)


def test_run_demo_prints_curl_lines_that_get_the_expected_status(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'demo.db'}"
    code = f"from pat_middleware.cli.demo import run_demo; run_demo({store_url!r}, port=0)"
    process = Process([sys.executable, "-u", "-c", code], {**os.environ})
    examples: list[Example] = []
    try:
        deadline = time.monotonic() + START_TIMEOUT
        line = process.next_line(deadline)
        assert line.startswith("pat-middleware demo: http://127.0.0.1:"), line
        while True:
            line = process.next_line(deadline)
            if line.startswith("# expect "):
                expect = int(line.split()[2].rstrip(":"))
                examples.append(parse_curl(process.next_line(deadline), expect))
            elif examples and not line.strip():
                break
        assert sorted({e.expect for e in examples}) == [200, 401, 403]
        with httpx.Client(timeout=10.0) as http:
            for example in examples:
                response = http.request(example.method, example.url, headers=example.headers, content=example.body)
                assert response.status_code == example.expect, (example, response.text)
    finally:
        code_ = process.stop(signal.SIGINT)  # what Ctrl-C sends
    output = process.text()
    assert code_ == 0, output
    assert "Traceback" not in output and output.rstrip().endswith("demo stopped"), output


def test_run_demo_twice_on_one_store_works(tmp_path: Path) -> None:
    """Earlier demo tokens are revoked, so the names and the per-user limit never clash."""
    from pat_middleware.cli.demo import _mint

    auth = PATAuth.from_url(f"sqlite:///{tmp_path / 'demo.db'}")
    try:
        first, _ = _mint(auth)
        second, _ = _mint(auth)
        assert auth.verify(second).user_id == "demo"
        assert [r.name for r in auth.manager.list("demo")] == ["demo"]
        with pytest.raises(Exception, match="invalid token"):
            auth.verify(first)
    finally:
        auth.close()
