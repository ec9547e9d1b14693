"""``examples/django_project`` as users run it: ``manage.py migrate`` and ``manage.py pat``
in subprocesses, then the project under gunicorn (WSGI) and uvicorn (ASGI), with
ordinary and hostile requests over real sockets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.hostile_http import Case, exchange, http_request, judge, tracebacks

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "examples" / "django_project"

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Project:
    env: dict[str, str]

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args], cwd=PROJECT, env=self.env, capture_output=True, text=True,
            timeout=120, check=check,
        )  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    db = tmp_path_factory.mktemp("django-example") / "db.sqlite3"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PAT_EXAMPLE_DB": str(db),
        "DJANGO_SECRET_KEY": "example-tests",
        "DJANGO_SETTINGS_MODULE": "project.settings",  # not the tests' settings pytest-django exported
    }
    made = Project(env)
    made.manage("migrate", "-v0")
    return made


@pytest.fixture(scope="module")
def token(project: Project) -> str:
    created = project.manage("pat", "create", "1", "laptop", "-s", "repo:read", "-s", "repo:write")
    assert "Created token" in created.stderr
    return created.stdout.strip()


def test_manage_py_pat_in_a_shell(project: Project, token: str) -> None:
    listed = project.manage("pat", "list", "1")
    assert token[4:16] in listed.stdout and token not in listed.stdout
    verified = subprocess.run(
        [sys.executable, "manage.py", "pat", "verify"], input=token, cwd=PROJECT, env=project.env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    missing = project.manage("pat", "show", "nosuchtoken0", check=False)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    bad = project.manage("pat", "create", "1", "x", "-s", "not a scope", check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    helped = project.manage("pat", "--help")
    assert "revoke-all" in helped.stdout and "db" not in helped.stdout.split()


@dataclass
class Server:
    port: int
    process: subprocess.Popen[str]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module", params=["gunicorn", "uvicorn"])
def server(
    request: pytest.FixtureRequest, project: Project, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    port = _free_port()
    if request.param == "gunicorn":
        command = [sys.executable, "-m", "gunicorn", "--workers", "1", "--threads", "4", "--worker-class", "gthread",
                   "--bind", f"127.0.0.1:{port}", "project.wsgi"]  # fmt: skip
    else:
        command = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port),
                   "project.asgi:application"]  # fmt: skip
    log = tmp_path_factory.mktemp("server") / "out.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            command, cwd=PROJECT, env=project.env, stdout=out, stderr=subprocess.STDOUT, text=True
        )
    running = Server(port, process, log)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=1.0).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{request.param} did not come up:\n{running.output()}")
        time.sleep(0.1)
    yield running
    process.terminate()
    process.wait(15)
    assert tracebacks(running.output()) == []


def test_the_project_under_a_real_server(server: Server, token: str) -> None:
    base = f"http://127.0.0.1:{server.port}"
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, timeout=10) as client:
        assert client.get("/").json() == {"service": "example", "authenticated_as": None}
        response = client.get("/repos", headers=auth)
        assert response.status_code == 200 and response.json() == {"repos": []}
        assert response.headers["PAT-Token-Expiration"].endswith(" UTC")
        assert client.get("/me", headers=auth).json()["username"] == "alice"
        assert client.post("/repos", headers=auth, json={"name": "web"}).status_code == 201  # no CSRF for tokens
        assert client.get("/drf/repos", headers=auth).json() == {"repos": ["web"], "user": "alice"}
        assert client.get("/repos/web", headers=auth).status_code == 200
        status = client.get("/status", headers=auth)
        assert status.status_code == 403 and 'scope="status:read admin"' in status.headers["WWW-Authenticate"]
        anonymous = client.get("/repos")
        assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"] == 'Bearer realm="example"'
        assert client.get("/drf/repos").status_code == 401
        assert client.get("/repos", headers={"Authorization": "Bearer pat_nonsense"}).status_code == 401
        assert client.get("/api/tokens", headers=auth).status_code == 403  # no tokens:manage scope
        assert client.get("/api/openapi.json").status_code == 200


CASES = [
    ("non-UTF-8 token", b"Bearer pat_\xff\xfe\xfd"),
    ("latin-1 token", b"Bearer caf\xe9"),
    ("oversized token", b"Bearer pat_" + b"A" * 6000),
    ("empty bearer", b"Bearer"),
    ("two credentials", b"Bearer a b"),
    ("control character", b"Bearer pat_\x01abc"),
    ("another scheme", b"Basic YWxpY2U6cHc="),
]


def test_hostile_headers_under_a_real_server(server: Server, token: str) -> None:
    problems = []
    for name, value in CASES:
        case = Case(
            name, http_request("GET", "/repos", [("Authorization", value)]), expect=(400, 401, 431), token_route=True
        )
        if (problem := judge(case, exchange(server.port, case), [token])) is not None:
            problems.append(f"{name}: {problem}")
    twice = http_request("GET", "/repos", [("Authorization", f"Bearer {token}"), ("Authorization", "Bearer x")])
    case = Case("two Authorization headers", twice, expect=(400,))
    if (problem := judge(case, exchange(server.port, case), [])) is not None:
        problems.append(f"{case.name}: {problem}")
    query = Case("query token not allowed", http_request("GET", f"/repos?access_token={token}"), expect=(401,))
    if (problem := judge(query, exchange(server.port, query), [])) is not None:
        problems.append(f"{query.name}: {problem}")
    assert problems == []


def test_a_revocation_from_manage_py_reaches_the_server(server: Server, project: Project) -> None:
    created = project.manage("pat", "create", "1", f"short-{server.port}", "-s", "repo:read")
    token = created.stdout.strip()
    url = f"http://127.0.0.1:{server.port}/repos"
    auth = {"Authorization": f"Bearer {token}"}
    assert httpx.get(url, headers=auth).status_code == 200
    project.manage("pat", "revoke", token[4:16])
    deadline = time.monotonic() + 15  # the revocation feed polls the store every 5 s
    while httpx.get(url, headers=auth).status_code == 200:
        assert time.monotonic() < deadline, "the server still accepts a revoked token"
        time.sleep(0.2)
