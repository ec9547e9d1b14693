"""Hostile requests against both example apps under real servers: no 5xx, no traceback.

``examples/starlette_app.py`` runs under uvicorn, ``examples/flask_app.py``
under werkzeug's threaded server (``flask run``) and under gunicorn with
gthread workers, each in a subprocess on a loopback port with an SQLite store
(no Redis). The test talks to them over raw sockets, so it can send bytes no
HTTP client would: odd ``Authorization`` bytes, 64 KiB headers, repeated
headers, broken framing, malformed JSON to the management API, odd forms to
the settings page, sessions of odd users (the examples' demo ``/login`` takes
any user name), odd methods and paths. Explicit cases first, then a few
thousand seeded random requests per server.

Every request must get an HTTP answer below 500. A bare close (or reset)
without an answer is accepted only where a case says so (``may_close``), with
its reason: deliberately broken HTTP framing, or a request over a server
limit, which a server may refuse by closing. Nothing may appear in the
server's output that looks like a traceback. Beyond that, an invariant on
token-only route: without a valid token anywhere in the request, no 2xx.
Where the design fixes the status (400 for two Authorization headers, 401 for
an unknown token, 415 for a form sent to the API...), a case says so.

Requests that failed when this sweep was written (a 500 or a traceback) are
in ``FIXED``, each group named after what was wrong, run by
``test_fixed_failures`` on every server so the fixes stay fixed. A request
that fails in future goes there as a strict xfail until it is fixed.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import string
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from hostile_http import (
    IO_TIMEOUT,
    Bytes,
    Case,
    Outcome,
    as_bytes,
    exchange,
    form_body,
    http_request,
    judge,
    tracebacks,
)
from test_example_starlette import ROOT, Process, free_port, wait_until_up

from pat_middleware import PATAuth
from pat_middleware.errors import PATError
from pat_middleware.policy import check_user_id
from pat_middleware.tokens import BASE62, checksum
from tests.helpers import FAST_ARGON2

pytestmark = pytest.mark.slow

#: Seeded random requests per server (the sweep also stops at SWEEP_BUDGET seconds).
SWEEP_REQUESTS = 3000
SWEEP_BUDGET = 40.0
SWEEP_SEED = 20240610
#: The sweep fails if the budget ran out before this many requests were answered.
SWEEP_MINIMUM = 500
CLIENT_THREADS = 4
KIB = 1024

# -- the servers ----------------------------------------------------------------------------------

KINDS = ("uvicorn", "werkzeug", "gunicorn-gthread")


@dataclass(frozen=True)
class AppShape:
    """What differs between the two example apps."""

    health: str
    #: Routes a request can reach only with a valid token (a session does not count).
    token_routes: tuple[str, ...]
    #: Every route, for the sweep.
    routes: tuple[str, ...]


STARLETTE = AppShape("/health", ("/user", "/repos"), ("/", "/health", "/user", "/repos", "/ws/events"))
FLASK = AppShape("/", ("/me", "/repos", "/status", "/admin/users"), ("/", "/me", "/repos", "/status", "/admin/users"))
MANAGEMENT = ("/login", "/api/tokens", "/api/openapi.json", "/settings/tokens")


def server_command(kind: str, port: int) -> list[str]:
    if kind == "uvicorn":
        return [sys.executable, "-m", "uvicorn", "examples.starlette_app:app", "--host", "127.0.0.1",
                "--port", str(port), "--ws", "wsproto", "--log-level", "info"]  # fmt: skip
    if kind == "werkzeug":  # flask run: werkzeug's threaded development server
        return [sys.executable, "-m", "flask", "--app", "examples.flask_app", "run", "--host", "127.0.0.1",
                "--port", str(port), "--with-threads", "--no-reload", "--no-debugger"]  # fmt: skip
    return [sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", "1", "--threads", "8",
            "--bind", f"127.0.0.1:{port}", "--access-logfile", "-", "--error-logfile", "-",
            "examples.flask_app:create_app()"]  # fmt: skip


def wait_for(url: str, process: Process, timeout: float = 30.0) -> None:
    """``wait_until_up`` for an app without ``/health``: ``url`` answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            pytest.fail(f"the server exited with {process.proc.returncode}:\n{process.text()}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"the server did not come up in {timeout}s:\n{process.text()}")


@dataclass
class Session:
    """A demo login: the session cookie and the settings page's CSRF token (if the page showed)."""

    user: str
    cookie: str
    csrf: str | None


@dataclass
class Server:
    kind: str
    port: int
    process: Process
    shape: AppShape
    reader: str  # alice, repo:read
    manager: str  # carol, every scope, tokens:manage
    revoked: str
    other: str  # bob, repo:read
    #: Ids of tokens the API and page cases may rename, rotate and revoke: alice's (for her
    #: session) and carol's (for her token, ``manager``).
    victims: tuple[str, ...]
    carol_victims: tuple[str, ...]
    sessions: dict[str, Session] = field(default_factory=dict)
    #: Where the output no test has looked at yet starts (checked at shutdown).
    unread: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def valid_tokens(self) -> tuple[str, ...]:
        return (self.reader, self.manager, self.other)

    def output_mark(self) -> int:
        return len(self.process.output)

    def settle(self) -> None:
        """Wait until the server has logged a sentinel request, so everything before it is in the output."""
        sentinel = uuid.uuid4().hex
        httpx.get(f"{self.base_url}{self.shape.health}?sentinel={sentinel}", timeout=IO_TIMEOUT)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and not any(sentinel in line for line in self.process.output[-50:]):
            time.sleep(0.05)
        time.sleep(0.1)

    def output_since(self, mark: int) -> str:
        self.settle()
        return "".join(self.process.output[mark:])


def login(base_url: str, user: str) -> Session:
    """Log in through the demo form; then open the settings page to get its CSRF token.

    The page is opened only for users ``check_user_id`` accepts (the others have
    no CSRF token to get: the page answers them 422).
    """
    cookies: dict[str, str] = {}

    def keep(response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            name, _, value = header.partition(";")[0].partition("=")
            cookies[name.strip()] = value

    def cookie() -> str:
        return "; ".join(f"{k}={v}" for k, v in cookies.items())

    body = "username=" + "".join(f"%{b:02X}" for b in user.encode("utf-8", "surrogatepass"))
    with httpx.Client(base_url=base_url, timeout=IO_TIMEOUT) as http:
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        answer = http.post("/login", content=body, headers=form)
        assert answer.status_code == 303, answer.text
        keep(answer)
        csrf = None
        if policy_accepts(user):
            page = http.get("/settings/tokens", headers={"Cookie": cookie()})
            assert page.status_code == 200, (user, page.status_code, page.text[:500])
            keep(page)
            found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            csrf = found.group(1) if found else None
    return Session(user, cookie(), csrf)


def policy_accepts(user: str) -> bool:
    try:
        check_user_id(user)
    except PATError:
        return False
    return True


#: Session users through the demo login (which strips the name and keeps 100 characters).
#: The policy refuses some of them (control, format, unassigned characters).
ODD_USERS = (
    "alice",
    "a" * 100,
    "💥",
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "%00",
    "O'Brien\"; DROP TABLE x; --",
    "\u0301",
    "\u200d",
    "ǅ",
    "\ufffd",
    "\x00",
    "a\x00b",
    "\x7f",
    "\x1b[31mred",
    "\u202e",
    "\ufeff",
    "\U0010ffff",
    "\U000e0001",
)


@pytest.fixture(scope="module", params=KINDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    kind: str = request.param
    tmp: Path = tmp_path_factory.mktemp(f"hostile-{kind}")
    store_url = f"sqlite:///{tmp / 'tokens.db'}"
    auth = PATAuth.from_url(store_url, hasher=FAST_ARGON2)  # argon2's cost is in the hash: fast verifications
    manager = auth.manager
    week = timedelta(days=7)
    reader = manager.create("alice", "reader", ["repo:read"], expires_in=week).token
    everything = ["repo:read", "repo:write", "events:read", "tokens:manage", "admin", "status:read"]
    manage = manager.create("carol", "manager", everything, expires_in=week).token
    revoked = manager.create("alice", "revoked", ["repo:read"], expires_in=week)
    manager.revoke(revoked.record.id)
    other = manager.create("bob", "other", ["repo:read"], expires_in=week).token
    victims = tuple(manager.create("alice", f"victim {i}", ["repo:read"], expires_in=week).record.id for i in range(8))
    carols = tuple(manager.create("carol", f"victim {i}", ["repo:read"], expires_in=week).record.id for i in range(4))
    auth.close()

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAT_")}
    env.update(PAT_STORE_URL=store_url, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    env.update(PAT_SESSION_SECRET="hostile-" + "s" * 32, FLASK_SECRET_KEY="hostile-" + "f" * 32)
    process = Process(server_command(kind, port), env)
    shape = STARLETTE if kind == "uvicorn" else FLASK
    base_url = f"http://127.0.0.1:{port}"
    try:
        if kind == "uvicorn":
            wait_until_up(base_url, process)
        else:
            wait_for(base_url + shape.health, process)
        srv = Server(kind, port, process, shape, reader, manage, revoked.token, other, victims, carols)
        for user in ODD_USERS:
            srv.sessions[user] = login(base_url, user)
        srv.unread = srv.output_mark()
        yield srv
    finally:
        code = process.stop(signal.SIGTERM)
    assert code in (0, -signal.SIGTERM), process.text()
    process.text()  # let the pump read the last lines
    unseen = tracebacks("".join(process.output[srv.unread :]))  # since the last test, shutdown included
    assert not unseen, "\n".join(unseen)


def send_all(server: Server, cases: Sequence[Case], budget: float = 50.0) -> tuple[list[str], Counter[str], int]:
    """Send ``cases`` from a few threads (at most ``budget`` seconds); the problems, the
    statuses seen and how many were sent."""
    deadline = time.monotonic() + budget
    problems: list[str] = []
    seen: Counter[str] = Counter()

    def one(case: Case) -> tuple[Case, Outcome] | None:
        if time.monotonic() > deadline:
            return None
        return case, exchange(server.port, case)

    sent = 0
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        for result in pool.map(one, cases):
            if result is None:
                continue
            sent += 1
            case, outcome = result
            seen[str(outcome.status or outcome.kind)] += 1
            problem = judge(case, outcome, server.valid_tokens)
            if problem:
                problems.append(f"{case.name}: {problem}\n    request: {case.data[:300]!r}")
    return problems, seen, sent


@contextlib.contextmanager
def watched(server: Server) -> Iterator[list[str]]:
    """Yields a list that, after the block, holds the tracebacks the server logged meanwhile."""
    mark = server.output_mark()
    found: list[str] = []
    yield found
    assert server.process.proc.poll() is None, f"the server died:\n{server.process.text()[-5000:]}"
    found += tracebacks(server.output_since(mark))
    server.unread = server.output_mark()


def assert_clean(problems: list[str], seen: Counter[str], sent: int, logged: list[str]) -> None:
    report = [f"{len(problems)} of {sent} requests failed (statuses {dict(seen)})", *problems[:40]]
    if logged:
        report += [f"{len(logged)} tracebacks in the server output; the first ones:", *logged[:5]]
    assert not problems and not logged, "\n".join(report)


# -- tokens and odd values ------------------------------------------------------------------------


def with_checksum(head: str) -> str:
    """``head`` + its correct checksum: passes the format check, so the server does real work."""
    return head + checksum(head)


def key_id(token: str) -> str:
    return token[4:16]


def secret(token: str) -> str:
    return token[16:48]


def random_base62(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(BASE62) for _ in range(n))


# -- explicit cases -------------------------------------------------------------------------------

#: Reasons a bare close (or reset) is a fine answer; each case that allows one names its reason.
BROKEN_FRAMING = "not valid HTTP/1.1 framing: a server may answer 400 or just close"
OVER_LIMIT = (
    "over the server's size or count limits: a server may answer 4xx or close (a close with unread bytes resets)"
)
BIG_BODY = (
    "a body far over the API's 64 KiB limit: the answer (413) may be lost when the server closes with unread bytes"
)


def bearer_cases(server: Server) -> list[Case]:
    """Odd ``Authorization`` values on a token-only route."""
    t = server.reader
    head = t[:-6]
    unknown = with_checksum("pat_" + "Z" * 12 + secret(t))
    wrong_secret = with_checksum(head[:16] + "x" * 32)
    bobs_id = with_checksum("pat_" + key_id(server.other) + secret(t))
    values: list[tuple[str, bytes, tuple[int, ...], str]] = [
        ("valid", f"Bearer {t}".encode(), (200,), ""),
        ("valid, lowercase scheme", f"bearer {t}".encode(), (200,), ""),
        ("valid, uppercase scheme", f"BEARER {t}".encode(), (200,), ""),
        ("valid, two spaces", f"Bearer  {t}".encode(), (200, 400), ""),
        ("valid, trailing spaces", f"Bearer {t}   ".encode(), (200, 400), ""),
        ("valid, 4000 spaces before", b"Bearer" + b" " * 4000 + t.encode(), (200, 400), ""),
        ("valid, space and tab", f"Bearer \t{t}".encode(), (200, 400), ""),
        ("valid, tab separator", f"Bearer\t{t}".encode(), (400,), ""),
        ("non-ASCII (UTF-8)", "Bearer tökén".encode(), (400,), ""),
        ("non-ASCII inside a valid token", f"Bearer {t[:20]}é{t[21:]}".encode(), (400,), ""),
        ("NBSP separator", f"Bearer\u00a0{t}".encode(), (400, 401), ""),
        ("latin-1 bytes", b"Bearer \xe9\xe8\xff", (400,), ""),
        ("NUL in the token", b"Bearer pat_\x00" + t[4:].encode(), (400,), ""),
        ("NUL after a valid token", f"Bearer {t}".encode() + b"\x00", (400,), ""),
        ("NUL alone", b"\x00", (400, 401), ""),
        ("control characters", b"Bearer \x01\x02\x03\x08\x0b\x0c\x1f", (400,), ""),
        ("DEL", b"Bearer \x7f", (400,), ""),
        ("CR without LF", b"Bearer abc\rdef", (400, 401), BROKEN_FRAMING),
        ("CR after a valid token", f"Bearer {t}".encode() + b"\r", (200, 400), BROKEN_FRAMING),
        ("8 KiB token", b"Bearer " + b"a" * (8 * KIB), (400, 401, 431), OVER_LIMIT),
        ("60 KiB token", b"Bearer " + b"a" * (60 * KIB), (400, 401, 431), OVER_LIMIT),
        ("valid checksum, unknown key id", f"Bearer {unknown}".encode(), (401,), ""),
        ("valid checksum, right key id, wrong secret", f"Bearer {wrong_secret}".encode(), (401,), ""),
        ("valid checksum, another user's key id", f"Bearer {bobs_id}".encode(), (401,), ""),
        ("revoked", f"Bearer {server.revoked}".encode(), (401,), ""),
        ("wrong prefix ghp_", f"Bearer ghp_{t[4:]}".encode(), (401,), ""),
        ("wrong prefix, its own valid checksum", f"Bearer {with_checksum('ghp_' + head[4:])}".encode(), (401,), ""),
        ("uppercase prefix", f"Bearer PAT_{t[4:]}".encode(), (401,), ""),
        ("dash after the prefix", f"Bearer pat-{t[4:]}".encode(), (400, 401), ""),
        ("no prefix", f"Bearer {t[4:]}".encode(), (401,), ""),
        ("truncated", f"Bearer {t[:-1]}".encode(), (401,), ""),
        ("one character more", f"Bearer {t}a".encode(), (401,), ""),
        ("swapped case", f"Bearer {t.swapcase()}".encode(), (401,), ""),
        ("padding", f"Bearer {t}==".encode(), (401,), ""),
        ("many spaces, no token", b"Bearer" + b" " * 4000, (400,), ""),
        ("Bearer alone", b"Bearer", (400,), ""),
        ("Bearer and a space", b"Bearer ", (400,), ""),
        ("empty value", b"", (400, 401), ""),
        ("only spaces", b"    ", (400, 401), ""),
        ("Basic", b"Basic dXNlcjpwYXNz", (401,), ""),
        ("Basic alone", b"Basic", (401,), ""),
        ("quoted token", f'Bearer "{t}"'.encode(), (400,), ""),
        ("token with a parameter", f'Bearer {t}, realm="x"'.encode(), (400,), ""),
        ("joined: Bearer, Bearer", f"Bearer {t}, Bearer {server.other}".encode(), (400,), ""),
        ("joined: Basic, Bearer", f"Basic dXNlcjpwYXNz, Bearer {t}".encode(), (400,), ""),
        ("joined: Bearer, Basic", f"Bearer {t}, Basic dXNlcjpwYXNz".encode(), (400,), ""),
        ("joined without a space", f"Bearer {t},Bearer {t}".encode(), (400,), ""),
        ("Bearer and a comma", b"Bearer ,", (400,), ""),
        ("empty Bearer, then a Bearer", f"Bearer, Bearer {t}".encode(), (400,), ""),
    ]
    cases = [
        Case(
            f"authorization {name}",
            http_request("GET", "/repos", [("Authorization", value)]),
            may_close,
            expect,
            token_route=True,
        )
        for name, value, expect, may_close in values
    ]

    def headers_case(
        name: str, headers: list[tuple[Bytes, Bytes]], expect: tuple[int, ...], may_close: str = ""
    ) -> Case:
        return Case(name, http_request("GET", "/repos", headers), may_close, expect, token_route=True)

    basic = ("Authorization", "Basic dXNlcjpwYXNz")
    cases += [
        headers_case("two Authorization headers, same token", [("Authorization", f"Bearer {t}")] * 2, (400,)),
        headers_case(
            "two Authorization headers, two tokens",
            [("Authorization", f"Bearer {t}"), ("Authorization", f"Bearer {server.other}")],
            (400,),
        ),
        headers_case("Authorization: Bearer, then Basic", [("Authorization", f"Bearer {t}"), basic], (400,)),
        headers_case("Authorization: Basic, then Bearer", [basic, ("Authorization", f"Bearer {t}")], (400,)),
        headers_case("two Basic Authorization headers", [basic, basic], (400, 401)),
        headers_case("100 Authorization headers", [("Authorization", f"Bearer {t}")] * 100, (400, 431), OVER_LIMIT),
        headers_case("odd-case header name", [("aUtHoRiZaTiOn", f"Bearer {t}")], (200,)),
        headers_case("space before the colon", [("Authorization ", "Bearer x")], (), BROKEN_FRAMING),
        headers_case("NUL in the header name", [(b"Author\x00ization", b"Bearer x")], (), BROKEN_FRAMING),
        headers_case("obs-fold", [("Authorization", f"Bearer\r\n {t}")], (), BROKEN_FRAMING),
        headers_case("LF-only line ends", [("Authorization", "Bearer x\nX-Other: y")], (), BROKEN_FRAMING),
    ]
    return cases


def query_token_cases(server: Server) -> list[Case]:
    """``access_token`` in the query: off in both examples, so never a login (401 on a token route)."""
    t = server.reader
    targets: list[tuple[str, bytes, tuple[int, ...], str]] = [
        ("valid", f"/repos?access_token={t}".encode(), (401,), ""),
        ("encoded name", f"/repos?access%5Ftoken={t}".encode(), (401,), ""),
        ("encoded token", ("/repos?access_token=" + "".join(f"%{ord(c):02X}" for c in t)).encode(), (401,), ""),
        ("twice", f"/repos?access_token={t}&access_token={t}".encode(), (401,), ""),
        ("NUL", b"/repos?access_token=%00", (401,), ""),
        ("invalid UTF-8", b"/repos?access_token=%FF%FE%FD", (401,), ""),
        ("%u escape", b"/repos?access_token=%u0041%u0042", (401,), ""),
        ("double encoded", b"/repos?access_token=%2561", (401,), ""),
        ("lone percent", b"/repos?access_token=%&%%&%zz", (401,), ""),
        ("semicolons", f"/repos?a=1;access_token={t}".encode(), (401,), ""),
        ("plus signs", f"/repos?access_token=+{t}+".encode(), (401,), ""),
        ("raw latin-1 byte", b"/repos?access_token=\xff", (400, 401), BROKEN_FRAMING),
        ("raw UTF-8", "/repos?access_token=tökén".encode(), (400, 401), BROKEN_FRAMING),
        ("10000 parameters", b"/repos?" + b"access_token=x&" * 10000, (), OVER_LIMIT),
    ]
    cases = [
        Case(f"query {name}", http_request("GET", target), may_close, expect, token_route=True)
        for name, target, expect, may_close in targets
    ]
    both = http_request("GET", f"/repos?access_token={server.other}", [("Authorization", f"Bearer {t}")])
    cases.append(Case("query token and a header token", both, expect=(200, 400)))
    return cases


def header_cases(server: Server) -> list[Case]:
    """Big, many and repeated headers; odd framing headers."""
    big = b"a" * (64 * KIB)
    t = server.reader
    post = "/api/tokens"
    json_type = ("Content-Type", "application/json")
    alice = server.sessions["alice"].cookie
    return [
        Case("64 KiB header", http_request("GET", "/", [("X-Big", big)]), OVER_LIMIT),
        Case(
            "64 KiB Authorization",
            http_request("GET", "/repos", [("Authorization", b"Bearer " + big)]),
            OVER_LIMIT,
            token_route=True,
        ),
        Case("64 KiB Cookie", http_request("GET", "/api/tokens", [("Cookie", b"session=" + big)]), OVER_LIMIT),
        Case(
            "64 KiB in 1024 headers",
            http_request("GET", "/", [(f"X-H{i}", b"v" * 56) for i in range(1024)]),
            OVER_LIMIT,
        ),
        Case(
            "200 repeated headers", http_request("GET", "/repos", [("X-Dup", "1")] * 200), OVER_LIMIT, token_route=True
        ),
        Case("1000 repeated headers", http_request("GET", "/", [("X-Dup", "1")] * 1000), OVER_LIMIT),
        Case("50 Cookie headers", http_request("GET", "/api/tokens", [("Cookie", alice)] * 50), OVER_LIMIT),
        Case(
            "50 Content-Type headers",
            http_request("POST", post, [("Cookie", alice)] + [json_type] * 50, b'{"name": "ct"}'),
            OVER_LIMIT,
        ),
        Case(
            "two Content-Types",
            http_request("POST", post, [("Cookie", alice), json_type, ("Content-Type", "text/plain")], b"{}"),
        ),
        Case("two Host headers", http_request("GET", "/", [("Host", "evil.example")])),
        Case("no Host", http_request("GET", "/", host=False)),
        Case(
            "two different Content-Lengths",
            http_request("POST", post, [json_type, ("Content-Length", "1"), ("Content-Length", "2")], b"{}"),
            BROKEN_FRAMING,
        ),
        Case(
            "Content-Length and chunked",
            http_request("POST", post, [json_type, ("Transfer-Encoding", "chunked")], b"0\r\n\r\n", length=True),
            BROKEN_FRAMING,
        ),
        Case(
            "negative Content-Length",
            http_request("POST", post, [json_type, ("Content-Length", "-1")], length=False),
            BROKEN_FRAMING,
        ),
        Case(
            "non-numeric Content-Length",
            http_request("POST", post, [json_type, ("Content-Length", "abc")], length=False),
            BROKEN_FRAMING,
        ),
        Case(
            "chunked JSON",
            http_request(
                "POST",
                post,
                [("Cookie", alice), json_type, ("Transfer-Encoding", "chunked")],
                b'7\r\n{"name"\r\n6\r\n: "ch"\r\n1\r\n}\r\n0\r\n\r\n',
                length=False,
            ),
            expect=(201,),
        ),
        Case(
            "Expect: 100-continue",
            http_request(
                "POST", post, [("Cookie", alice), json_type, ("Expect", "100-continue")], b'{"name": "expect"}'
            ),
        ),
        Case("Expect: odd", http_request("GET", "/", [("Expect", "\x01\xff")])),
        Case(
            "Upgrade: h2c",
            http_request("GET", "/", [("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")]),
        ),
        Case(
            "X-Forwarded-For junk",
            http_request(
                "GET", "/repos", [("X-Forwarded-For", "\x00, 999.1.1.1, ::ffff:x"), ("Authorization", f"Bearer {t}")]
            ),
            token_route=True,
        ),
        Case(
            "Accept-Encoding junk",
            http_request("GET", "/api/openapi.json", [("Accept-Encoding", "gzip;q=NaN, br;q=-1, *;q=1e400")]),
        ),
        Case("Range junk", http_request("GET", "/api/openapi.json", [("Range", "bytes=-0-,99999999999999999999-")])),
    ]


def framing_cases(server: Server) -> list[Case]:
    """Requests that are not HTTP/1.1: 400 or a close, never a 5xx."""
    raw = [
        ("TLS ClientHello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)) + b"\x00" * 40, True),
        ("empty lines", b"\r\n\r\n\r\n", True),
        ("binary garbage", bytes(random.Random(7).randrange(256) for _ in range(2048)), True),
        ("no version (HTTP/0.9)", b"GET /\r\n\r\n", True),
        ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: x\r\nConnection: close\r\n\r\n", False),
        ("lowercase version", b"GET / http/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", False),
        ("NUL in the method", b"G\x00T / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", False),
        ("NUL in the path", b"GET /\x00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", False),
        ("tab in the request line", b"GET\t/\tHTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", False),
        ("two spaces in the request line", b"GET  /  HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", False),
        ("only a method, then EOF", b"GET", True),
        ("headers cut, then EOF", b"GET / HTTP/1.1\r\nHost: x\r\nAuthoriz", True),
        (
            "header without a colon",
            b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization Bearer x\r\nConnection: close\r\n\r\n",
            False,
        ),
        (
            "header starting with a space",
            b"GET / HTTP/1.1\r\n Authorization: Bearer x\r\nHost: x\r\nConnection: close\r\n\r\n",
            False,
        ),
        ("1000-character method", b"A" * 1000 + b" / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", False),
        ("60 KiB path", b"GET /" + b"a" * (60 * KIB) + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", False),
    ]
    cases = [Case(f"framing {name}", data, BROKEN_FRAMING, half_close=half) for name, data, half in raw]
    keep_alive = b"GET /repos HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\r\n\r\n"
    pipelined = keep_alive + http_request("GET", "/repos", [("Authorization", "Bearer")])
    cases.append(Case("pipelined hostile requests", pipelined, expect=(400,), token_route=True))
    return cases


#: JSON bodies for POST/PATCH: (name, body, statuses the API gives a session user).
BAD_JSON: list[tuple[str, bytes, tuple[int, ...]]] = [
    ("unclosed object", b"{", (400,)),
    ("not JSON", b"not json", (400,)),
    ("array", b"[]", (422,)),
    ("number", b"1", (422,)),
    ("null", b"null", (422,)),
    ("string", b'"name"', (422,)),
    ("true", b"true", (422,)),
    ("60000 open brackets", b"[" * 60000, (400,)),
    ("12000 open objects", b'{"a":' * 12000, (400,)),
    ("nested 500 deep", b"[" * 500 + b"]" * 500, (422,)),
    ("nested 5000 deep, closed", b"[" * 5000 + b"]" * 5000, (400, 422)),
    ("name nested 3000 deep", b'{"name": ' + b"[" * 3000 + b"]" * 3000 + b"}", (400, 422)),
    ("70 KiB", b'{"name": "' + b"a" * (70 * KIB) + b'"}', (413,)),
    ("invalid UTF-8", b'{"name": "\xff\xfe"}', (400,)),
    ("overlong UTF-8", b'{"name": "\xc0\xae"}', (400,)),
    ("UTF-8 BOM", b'\xef\xbb\xbf{"name": "bom"}', (201, 400)),
    ("UTF-16", '{"name": "utf16"}'.encode("utf-16"), (400,)),
    ("lone surrogate", b'{"name": "\\ud800"}', (422,)),
    ("surrogate pair escape", b'{"name": "\\ud83d\\udca5 boom"}', (201,)),
    ("NUL escape", b'{"name": "a\\u0000b"}', (422,)),
    ("raw control byte", b'{"name": "a\x01b"}', (400,)),
    ("NaN", b'{"name": "n1", "expires_in_days": NaN}', (400,)),
    ("Infinity", b'{"name": "n2", "expires_in_days": Infinity}', (400,)),
    ("1e400", b'{"name": "n3", "expires_in_days": 1e400}', (422,)),
    ("5000-digit integer", b'{"name": "n4", "expires_in_days": ' + b"9" * 5000 + b"}", (400, 422)),
    ("duplicate keys", b'{"name": "a1", "name": "b"}', (400,)),
    ("unknown field", b'{"name": "u1", "admin": true}', (422,)),
    ("name a number", b'{"name": 1}', (422,)),
    ("name null", b'{"name": null}', (422,)),
    ("name an object", b'{"name": {"$gt": ""}}', (422,)),
    ("name empty", b'{"name": ""}', (422,)),
    ("name 60000 characters", b'{"name": "' + b"n" * 60000 + b'"}', (422,)),
    ("name RTL override", b'{"name": "\\u202egnp.exe"}', (422,)),
    ("scopes a string", b'{"name": "s1", "scopes": "repo:read"}', (422,)),
    ("scopes numbers", b'{"name": "s2", "scopes": [1, 2]}', (422,)),
    ("scopes nested", b'{"name": "s3", "scopes": [["repo:read"]]}', (422,)),
    ("101 scopes", b'{"name": "s4", "scopes": [' + b",".join(b'"s%d"' % i for i in range(101)) + b"]}", (422,)),
    ("scope with NUL", b'{"name": "s5", "scopes": ["repo:\\u0000"]}', (422,)),
    ("scope 10000 characters", b'{"name": "s6", "scopes": ["' + b"s" * 10000 + b'"]}', (422,)),
    ("expires_at year 9999", b'{"name": "e1", "expires_at": "9999-12-31T23:59:59Z"}', (422,)),
    ("expires_at year 1", b'{"name": "e2", "expires_at": "0001-01-01T00:00:00Z"}', (422,)),
    ("expires_at Feb 30", b'{"name": "e3", "expires_at": "2026-02-30T00:00:00Z"}', (422,)),
    ("expires_at offset +99:99", b'{"name": "e4", "expires_at": "2026-01-01T00:00:00+99:99"}', (422,)),
    ("expires_at 9 fraction digits", b'{"name": "e5", "expires_at": "2030-01-01T00:00:00.123456789Z"}', (201, 422)),
    ("expires_at a number", b'{"name": "e6", "expires_at": 1767225600}', (422,)),
    ("expires_in_days -1", b'{"name": "d1", "expires_in_days": -1}', (422,)),
    ("expires_in_days 1e20", b'{"name": "d2", "expires_in_days": 100000000000000000000}', (422,)),
    ("expires_in_days true", b'{"name": "d3", "expires_in_days": true}', (422,)),
    ("expires_in_days 1.5", b'{"name": "d4", "expires_in_days": 1.5}', (422,)),
    ("expires_in_days 100000", b'{"name": "d5", "expires_in_days": 100000}', (422,)),
    ("never_expires a string", b'{"name": "v1", "never_expires": "yes"}', (422,)),
    ("never_expires", b'{"name": "v2", "never_expires": true}', (422,)),
    ("two expiries", b'{"name": "v3", "expires_in_days": 7, "expires_at": "2030-01-01T00:00:00Z"}', (201, 422)),
    ("CIDR /33", b'{"name": "c1", "allowed_cidrs": ["999.1.1.1/33"]}', (422,)),
    ("CIDR with a space", b'{"name": "c2", "allowed_cidrs": ["1.2.3.4/ 8"]}', (422,)),
    ("CIDR with a zone", b'{"name": "c3", "allowed_cidrs": ["fe80::1%eth0/64"]}', (201, 422)),
    ("CIDR 1000 characters", b'{"name": "c4", "allowed_cidrs": ["' + b"1" * 1000 + b'"]}', (422,)),
    ("100 empty CIDRs", b'{"name": "c5", "allowed_cidrs": [' + b",".join([b'""'] * 100) + b"]}", (422,)),
    ("description 60000 characters", b'{"name": "d6", "description": "' + b"d" * 60000 + b'"}', (422,)),
    ("description with NUL", b'{"name": "d7", "description": "\\u0000"}', (201, 422)),
]
ROTATE_JSON: list[tuple[str, bytes, tuple[int, ...]]] = [
    ("grace -1", b'{"grace_seconds": -1}', (422,)),
    ("grace 1e30", b'{"grace_seconds": 1000000000000000000000000000000}', (422,)),
    ("grace 1.5", b'{"grace_seconds": 1.5}', (422,)),
    ("grace true", b'{"grace_seconds": true}', (422,)),
    ("expires_in_days 0", b'{"expires_in_days": 0}', (422,)),
    ("unknown field", b'{"name": "x"}', (422,)),
    ("not an object", b"[1]", (422,)),
    ("malformed", b'{"grace_seconds": ', (400,)),
]
CONTENT_TYPES: list[tuple[str, str | bytes | None, tuple[int, ...]]] = [
    ("no Content-Type", None, (415,)),
    ("text/plain", "text/plain", (415,)),
    ("form", "application/x-www-form-urlencoded", (415,)),
    ("multipart", "multipart/form-data; boundary=x", (415,)),
    ("latin-1 charset", "application/json; charset=latin-1", (201,)),
    ("uppercase", "APPLICATION/JSON", (201,)),
    ("list", "application/json, text/plain", (415,)),
    ("NUL", b"application/json\x00", (400, 415)),
    ("latin-1 byte", b"application/json\xff", (415,)),
    ("empty", "", (415,)),
    ("semicolons", "application/json;;;;", (201,)),
    ("merge-patch", "application/merge-patch+json", (415,)),
]


def api_cases(server: Server) -> list[Case]:
    """Malformed, oversized, non-object, deeply nested and invalid UTF-8 JSON to the REST API,
    as a session user and with a ``tokens:manage`` token; odd API paths and methods."""
    alice = ("Cookie", server.sessions["alice"].cookie)
    manage = ("Authorization", f"Bearer {server.manager}")
    json_type = ("Content-Type", "application/json")
    cases: list[Case] = []
    for who, cred, victims in (("session", alice, server.victims), ("token", manage, server.carol_victims)):
        for name, body, expect in BAD_JSON:
            data = http_request("POST", "/api/tokens", [cred, json_type], body)
            cases.append(Case(f"API {who} POST {name}", data, expect=expect))
            # the same body as a change: the body's own defects are answered alike, the rest
            # (a rename, a field PATCH does not take) only has to stay below 500
            patch = body.replace(b'{"name": "', b'{"name": "renamed ', 1)  # no clash with the POST's name
            data = http_request("PATCH", f"/api/tokens/{victims[0]}", [cred, json_type], patch)
            cases.append(Case(f"API {who} PATCH {name}", data, expect=expect if set(expect) <= {400, 413} else ()))
        for name, body, expect in ROTATE_JSON:
            data = http_request("POST", f"/api/tokens/{victims[1]}/rotate", [cred, json_type], body)
            cases.append(Case(f"API {who} rotate {name}", data, expect=expect))
        for name, value, expect in CONTENT_TYPES:
            headers: list[tuple[Bytes, Bytes]] = [cred] if value is None else [cred, ("Content-Type", value)]
            body = b'{"name": "ct %d %s"}' % (len(cases), who.encode())
            cases.append(
                Case(
                    f"API {who} Content-Type {name}", http_request("POST", "/api/tokens", headers, body), expect=expect
                )
            )
        big = http_request("POST", "/api/tokens", [cred, json_type], b'{"name": "' + b"a" * (1024 * KIB) + b'"}')
        cases.append(Case(f"API {who} 1 MiB body", big, BIG_BODY, (413,)))
    paths = [
        ("GET", "/api/tokens/" + "Z" * 12, (404,)),
        ("GET", "/api/tokens/" + "Z" * 13, (404,)),
        ("GET", "/api/tokens/%00", (404,)),
        ("GET", "/api/tokens/..%2F..%2Fsettings", (404,)),
        ("GET", f"/api/tokens/{server.victims[0]}/rotate/extra", (404,)),
        ("GET", "/api/tokens/" + "%C3%84" * 12, (404,)),
        ("GET", "/api/tokens/" + "%00" * 12, (404,)),
        ("GET", "/api/tokens?state=%FF", (422,)),
        ("GET", "/api/tokens?state=all&state=all", (422,)),
        ("GET", "/api/tokens?state=" + "a" * 4000, (422,)),
        ("GET", "/api//tokens", (404,)),
        ("GET", "/api/tokens/", (404,)),
        ("GET", "/api/%74okens", (200,)),
        ("GET", "/api/tokens%2F" + server.victims[0], (200, 404)),
        ("PUT", "/api/tokens", (405,)),
        ("FOO", "/api/tokens", (400, 405)),  # 400: httptools (uvicorn[standard]) refuses unknown methods
        ("TRACE", "/api/tokens", (405,)),
        ("OPTIONS", "/api/tokens", (405,)),
        ("DELETE", "/api/tokens/" + "Z" * 12, (404,)),
        ("DELETE", f"/api/tokens/{server.victims[2]}", (204,)),
        ("DELETE", f"/api/tokens/{server.victims[2]}", (204,)),
        ("POST", "/api/tokens/" + "Z" * 12 + "/rotate", (404, 415)),
        ("HEAD", "/api/openapi.json", (200,)),
        ("POST", "/api/openapi.json", (404, 405)),
    ]
    for method, path, expect in paths:
        cases.append(Case(f"API session {method} {path[:60]}", http_request(method, path, [alice]), expect=expect))
    reader = ("Authorization", f"Bearer {server.reader}")
    cases += [
        Case(
            "API token without tokens:manage",
            http_request("POST", "/api/tokens", [reader, json_type], b'{"name": "r"}'),
            expect=(403,),
        ),
        Case(
            "API session and a bad token",
            http_request("GET", "/api/tokens", [alice, ("Authorization", "Bearer x")]),
            expect=(401,),
        ),
        Case(
            "API session and a malformed header",
            http_request("GET", "/api/tokens", [alice, ("Authorization", "Bearer")]),
            expect=(400,),
        ),
        Case("API anonymous", http_request("POST", "/api/tokens", [json_type], b'{"name": "anon"}'), expect=(401,)),
    ]
    return cases


def form_cases(server: Server) -> list[Case]:
    """Odd form posts to the settings page (alice's session, her CSRF token unless said otherwise)."""
    session = server.sessions["alice"]
    assert session.csrf
    cookie = ("Cookie", session.cookie)
    form_type = ("Content-Type", "application/x-www-form-urlencoded")
    victim = server.victims[3]
    names = iter(range(1000))

    def create(**fields: str) -> list[tuple[str, str]]:
        """A create form: a fresh name (names are unique per user), 30 days, then ``fields``."""
        form = {"action": "create", "name": f"form {next(names)}", "expiration": "30", **fields}
        return list(form.items())

    bodies: list[tuple[str, list[tuple[str, str]], tuple[int, ...]]] = [
        ("create", create(scope="repo:read"), (200,)),
        ("create, empty name", create(name=""), (422,)),
        ("create, NUL name", create(name="\x00"), (422,)),
        ("create, 60000-character name", create(name="n" * 60000), (413, 422)),
        ("create, custom without a date", create(expiration="custom"), (422,)),
        ("create, date 9999-99-99", create(expiration="custom", expires_on="9999-99-99"), (422,)),
        ("create, date Feb 30", create(expiration="custom", expires_on="2026-02-30"), (422,)),
        ("create, date 0000-00-00", create(expiration="custom", expires_on="0000-00-00"), (422,)),
        ("create, date with a time", create(expiration="custom", expires_on="2030-01-01T00:00:00Z"), (422,)),
        ("create, expiration superscript two", create(expiration="²"), (422,)),
        ("create, expiration -1", create(expiration="-1"), (422,)),
        ("create, expiration 99999999", create(expiration="99999999"), (422,)),
        ("create, expiration never", create(expiration="never"), (422,)),
        ("create, unknown scope", create(scope="root"), (200, 422)),
        ("create, NUL scope", create(scope="\x00"), (422,)),
        ("create, 600 fields", create() + [("scope", "repo:read")] * 600, (400,)),
        ("create, 200 scopes in text", create(scopes=" ".join(f"s{i}" for i in range(200))), (422,)),
        ("rename, empty", [("action", "rename"), ("token_id", victim), ("name", "")], (422,)),
        ("rename, control characters", [("action", "rename"), ("token_id", victim), ("name", "\x1b[2J")], (422,)),
        ("rename, unknown id", [("action", "rename"), ("token_id", "Z" * 12), ("name", "x")], (404,)),
        ("rotate, empty id", [("action", "rotate"), ("token_id", "")], (404,)),
        ("rotate, NUL id", [("action", "rotate"), ("token_id", "\x00")], (404,)),
        ("rotate, path id", [("action", "rotate"), ("token_id", "../" * 4)], (404,)),
        ("revoke, 10000-character id", [("action", "revoke"), ("token_id", "Z" * 10000)], (404,)),
        ("revoke", [("action", "revoke"), ("token_id", victim)], (303,)),
        ("revoke again", [("action", "revoke"), ("token_id", victim)], (303,)),
        # a token revoked before the run: the "revoke" cases above are sent concurrently with this one
        ("rotate, revoked", [("action", "rotate"), ("token_id", server.revoked[4:16])], (404, 409, 422)),
        ("unknown action", [("action", "DROP TABLE")], (400,)),
        ("no action", [], (400,)),
    ]
    cases = [
        Case(
            f"page {name}",
            http_request(
                "POST", "/settings/tokens", [cookie, form_type], form_body([("csrf_token", session.csrf), *fields])
            ),
            expect=expect,
        )
        for name, fields, expect in bodies
    ]

    def post(
        name: str,
        body: bytes,
        expect: tuple[int, ...],
        headers: Sequence[tuple[Bytes, Bytes]] = (cookie, form_type),
        may_close: str = "",
    ) -> Case:
        return Case(f"page {name}", http_request("POST", "/settings/tokens", headers, body), may_close, expect)

    good = form_body([("csrf_token", session.csrf), *create()])
    cases += [
        post("no CSRF token", form_body(create()), (403,)),
        post("wrong CSRF token", form_body([("csrf_token", "x" * 43), *create()]), (403,)),
        post("non-ASCII CSRF token", form_body([("csrf_token", "é" * 43), *create()]), (403,)),
        post("NUL CSRF token", form_body([("csrf_token", "\x00"), *create()]), (403,)),
        post("CSRF token twice", form_body([("csrf_token", "x"), ("csrf_token", session.csrf), *create()]), (403,)),
        post("invalid UTF-8", b"csrf_token=" + session.csrf.encode() + b"&action=create&name=\xff\xfe", (400,)),
        post("bad percent escapes", b"csrf_token=%zz&action=%&name=%%%", (403,)),
        post("no Content-Type", good, (415,), [cookie]),
        post("JSON", b'{"action": "create"}', (415,), [cookie, ("Content-Type", "application/json")]),
        post(
            "multipart",
            b'--x\r\nContent-Disposition: form-data; name="action"\r\n\r\ncreate\r\n--x--\r\n',
            (415,),
            [cookie, ("Content-Type", "multipart/form-data; boundary=x")],
        ),
        post("70 KiB", good + b"&pad=" + b"p" * (70 * KIB), (413,)),
        post("1 MiB", good + b"&pad=" + b"p" * (1024 * KIB), (413,), may_close=BIG_BODY),
        post("no session", good, (303,), [form_type]),
        post("tampered session cookie", good, (303,), [("Cookie", session.cookie[:-3] + "AAA"), form_type]),
        # gunicorn refuses the control byte itself (400)
        post("garbage session cookie", good, (303, 400), [("Cookie", b"session=\x01\xff" + b"A" * 4000), form_type]),
        Case("page PUT", http_request("PUT", "/settings/tokens", [cookie, form_type], good), expect=(405,)),
        Case("page odd done", http_request("GET", "/settings/tokens?done=%FF%00<script>", [cookie]), expect=(200,)),
        Case("page done twice", http_request("GET", "/settings/tokens?done=revoked&done=x", [cookie]), expect=(200,)),
    ]
    login = "/login"
    cases += [
        Case("login no user name", http_request("POST", login, [form_type], b"x=1"), expect=(303,)),
        Case("login two user names", http_request("POST", login, [form_type], b"username=a&username=b"), expect=(303,)),
        Case("login invalid UTF-8", http_request("POST", login, [form_type], b"username=\xff\xfe"), expect=(303,)),
        Case(
            "login JSON",
            http_request("POST", login, [("Content-Type", "application/json")], b'{"username": "a"}'),
            expect=(303,),
        ),
        Case(
            "login 60000-character name",
            http_request("POST", login, [form_type], b"username=" + b"u" * 60000),
            expect=(303,),
        ),
        Case(
            "login 1 MiB",
            http_request("POST", login, [form_type], b"username=" + b"u" * (1024 * KIB)),
            BIG_BODY,
            expect=(303, 413),
        ),
        Case("login PUT", http_request("PUT", login, [form_type], b"username=a"), expect=(405,)),
    ]
    return cases


def session_cases(server: Server) -> list[Case]:
    """The API and the page as odd session users (the demo login takes any name).

    Users the policy refuses get a 422 from the API and from the settings page
    (it answered them 500 before: ``FIXED``, page-null-user and page-refused-users)."""
    cases: list[Case] = []
    json_type = ("Content-Type", "application/json")
    form_type = ("Content-Type", "application/x-www-form-urlencoded")
    for user, session in server.sessions.items():
        cookie = ("Cookie", session.cookie)
        accepted = policy_accepts(user)
        label = repr(user)[:40]
        cases += [
            Case(
                f"session {label} API list",
                http_request("GET", "/api/tokens", [cookie]),
                expect=(200,) if accepted else (422,),
            ),
            Case(
                f"session {label} API create",
                http_request("POST", "/api/tokens", [cookie, json_type], b'{"name": "odd user"}'),
                expect=(201,) if accepted else (422,),
            ),
            Case(
                f"session {label} API get",
                http_request("GET", f"/api/tokens/{server.victims[4]}", [cookie]),
                expect=(200, 404) if accepted else (404, 422),
            ),
        ]
        if not accepted:
            cases.append(
                Case(f"session {label} page", http_request("GET", "/settings/tokens", [cookie]), expect=(422,))
            )
        if accepted:
            assert session.csrf
            fields = [("csrf_token", session.csrf), ("action", "create"), ("name", "page"), ("expiration", "7")]
            cases += [
                Case(f"session {label} page", http_request("GET", "/settings/tokens", [cookie]), expect=(200,)),
                Case(
                    f"session {label} page create",
                    http_request("POST", "/settings/tokens", [cookie, form_type], form_body(fields)),
                    expect=(200,),
                ),
            ]
    return cases


def method_path_cases(server: Server) -> list[Case]:
    """Odd methods and request targets, anonymous and with a bad token."""
    targets = [
        "/",
        "//",
        "///api//tokens",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/%00",
        "/repos%00",
        "/%ff%fe",
        "/repos/",
        "/api/tokens%2F",
        "/settings/tokens/../tokens",
        "/settings/tokens/",
        "/settings//tokens",
        "/%2Fsettings%2Ftokens",
        "/a" * 4000,
        "/?" + "a=b&" * 3000,
        "/repos#fragment",
        "/repos?%0d%0aSet-Cookie:%20x=1",
        "/%0d%0a",
        "/~",
        "/.env",
        "/repos;param",
        "/repos?",
        "/repos??",
        "http://evil.example/repos",
        "//evil.example/repos",
        "*",
        "repos",
        "/%C0%AE%C0%AE/",
        "/%u0041",
        "/\\..\\",
        "/login?next=//evil.example",
        "/ws/events",
        "/settings/tokens?next=%00",
    ]
    methods = ["GET", "HEAD", "POST", "DELETE", "get", "FOO", "PROPFIND", "TRACE", "OPTIONS", "M-SEARCH"]
    cases: list[Case] = []
    for i, target in enumerate(targets):
        method = methods[i % len(methods)]
        headers: list[tuple[Bytes, Bytes]] = [("Authorization", "Bearer x")] if i % 3 == 0 else []
        limit = OVER_LIMIT if len(target) > 4000 else ""
        close = BROKEN_FRAMING if target in ("*", "repos") or "#" in target or "\\" in target else limit
        token_route = target in server.shape.token_routes
        cases.append(
            Case(f"{method} {target[:60]}", http_request(method, target, headers), close, token_route=token_route)
        )
        cases.append(Case(f"GET {target[:60]}", http_request("GET", target), close, token_route=token_route))
    cases += [
        Case("CONNECT", http_request("CONNECT", "127.0.0.1:80"), BROKEN_FRAMING),
        Case("OPTIONS *", http_request("OPTIONS", "*"), BROKEN_FRAMING),
        Case(
            "HTTP/1.0 without Host",
            http_request("GET", "/repos", version=b"HTTP/1.0", host=False),
            expect=(401,),
            token_route=True,
        ),
        Case(
            "websocket upgrade, bad token",
            http_request(
                "GET",
                "/ws/events",
                [
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                    ("Sec-WebSocket-Version", "13"),
                    ("Authorization", "Bearer \xff"),
                ],
            ),
        ),
        Case(
            "websocket upgrade, bad key",
            http_request(
                "GET",
                "/ws/events",
                [
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Key", "\x00"),
                    ("Sec-WebSocket-Version", "999"),
                    ("Authorization", f"Bearer {server.reader}"),
                ],
            ),
        ),
    ]
    return cases


def explicit_cases(server: Server) -> list[Case]:
    return [
        *bearer_cases(server),
        *query_token_cases(server),
        *header_cases(server),
        *framing_cases(server),
        *api_cases(server),
        *form_cases(server),
        *session_cases(server),
        *method_path_cases(server),
    ]


# -- known failures -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Known:
    """Requests that got a 5xx or logged a traceback, on the servers in ``kinds``, before ``reason`` was fixed."""

    id: str
    kinds: tuple[str, ...]
    reason: str
    cases: Callable[[Server], list[Case]]


def _cut_short(path: str, headers: Sequence[tuple[Bytes, Bytes]], body: bytes) -> Case:
    """A body shorter than its Content-Length, then the client's end of the connection shuts."""
    data = http_request("POST", path, [*headers, ("Content-Length", str(len(body) + 96))], body, length=False)
    return Case(f"POST {path}, body cut short", data, "the client went away: nobody reads an answer", half_close=True)


def _bad_chunk(path: str, headers: Sequence[tuple[Bytes, Bytes]]) -> Case:
    """A chunked body whose first chunk size is not hexadecimal."""
    data = http_request(
        "POST", path, [*headers, ("Transfer-Encoding", "chunked")], b"zz\r\n{}\r\n0\r\n\r\n", length=False
    )
    return Case(f"POST {path}, invalid chunk size", data, BROKEN_FRAMING)


def _page_as(server: Server, users: Sequence[str]) -> list[Case]:
    cases = []
    for user in users:
        cookie = ("Cookie", server.sessions[user].cookie)
        form = ("Content-Type", "application/x-www-form-urlencoded")
        cases.append(Case(f"page as {user!r}", http_request("GET", "/settings/tokens", [cookie])))
        body = form_body([("csrf_token", "x"), ("action", "create"), ("name", "n")])
        cases.append(Case(f"page form as {user!r}", http_request("POST", "/settings/tokens", [cookie, form], body)))
    return cases


JSON_TYPE = ("Content-Type", "application/json")
FORM_TYPE = ("Content-Type", "application/x-www-form-urlencoded")
REFUSED_USERS = tuple(user for user in ODD_USERS if not policy_accepts(user))
FIXED: tuple[Known, ...] = (
    Known(
        "page-null-user",
        KINDS,
        "settings page: 500 (and a traceback) when the session user fails check_user_id; the API answers 422",
        lambda server: _page_as(server, ["\x00"])[:1],
    ),
    Known(
        "page-refused-users",
        KINDS,
        "settings page: 500 (and a traceback) for every session user check_user_id refuses, GET and POST",
        lambda server: _page_as(server, REFUSED_USERS),
    ),
    Known(
        "api-body-cut-short",
        ("uvicorn",),
        "Starlette API mount: ClientDisconnect from request.stream() escapes (Exception in ASGI application)",
        lambda server: [_cut_short("/api/tokens", [JSON_TYPE], b'{"na')],
    ),
    Known(
        "page-body-cut-short",
        ("uvicorn",),
        "Starlette settings page: ClientDisconnect from request.stream() escapes (Exception in ASGI application)",
        lambda server: [
            _cut_short("/settings/tokens", [("Cookie", server.sessions["alice"].cookie), FORM_TYPE], b"a=b")
        ],
    ),
    Known(
        "api-bad-chunk",
        KINDS,
        "API: reading a body with an invalid chunk size raises from the server's stream: "
        "500 and a traceback on werkzeug (ValueError) and gunicorn (InvalidChunkSize); "
        "400 but a ClientDisconnect traceback on uvicorn",
        lambda server: [_bad_chunk("/api/tokens", [JSON_TYPE])],
    ),
    Known(
        "page-bad-chunk",
        KINDS,
        "settings page: as api-bad-chunk",
        lambda server: [_bad_chunk("/settings/tokens", [("Cookie", server.sessions["alice"].cookie), FORM_TYPE])],
    ),
    Known(
        "example-login-body-cut-short",
        ("uvicorn",),
        "examples/starlette_app.py login(): ClientDisconnect from request.body() escapes",
        lambda server: [_cut_short("/login", [FORM_TYPE], b"username=a")],
    ),
    Known(
        "example-login-bad-chunk",
        KINDS,
        "example /login: as api-bad-chunk (Flask's request.form, Starlette's request.body())",
        lambda server: [_bad_chunk("/login", [FORM_TYPE])],
    ),
    Known(
        "example-repos-body-cut-short",
        ("uvicorn",),
        "examples/starlette_app.py Repos.post: ClientDisconnect from request.json() escapes",
        lambda server: [_cut_short("/repos", [("Authorization", f"Bearer {server.manager}"), JSON_TYPE], b'{"na')],
    ),
    Known(
        "example-repos-bad-chunk",
        KINDS,
        "example POST /repos: as api-bad-chunk (Flask's get_json(silent=True) does not cover a stream error)",
        lambda server: [_bad_chunk("/repos", [("Authorization", f"Bearer {server.manager}"), JSON_TYPE])],
    ),
)


# -- the seeded sweep -----------------------------------------------------------------------------

#: Odd characters for header values (no CR or LF: those break framing, see ``_framing``).
ODD_CHARS = [chr(c) for c in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F)] + list(
    " \t,;=\"'\\/+-._~%é€💥\u00a0\u2028\u202e\ufeff\ufffd"
)
ODD_BYTES = [bytes([b]) for b in range(0x80, 0x100, 7)] + [b"\xc0\xae", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]
SCHEMES = [
    "Bearer",
    "bearer",
    "BEARER",
    "BeArEr",
    "Basic",
    "Token",
    "",
    "Bearer,",
    "Bearerx",
    "Digest",
    "Bearer:",
    "\u00a0Bearer",
]
SEPARATORS = [" ", " ", " ", "  ", "\t", " \t ", "", ","]
PREFIXES = ["pat", "ghp", "glpat", "PAT", "pa", "patx", "xoxb", "p", "pat1"]
SUFFIXES = ["", "", "", " ", ",", "=", "==", " extra", ", Bearer x", "\x00", ";", "\t"]
METHODS = ["GET", "GET", "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "get", "FOO", "PROPFIND"]
SEGMENTS = [
    "",
    ".",
    "..",
    "%2e%2e",
    "%2F",
    "%00",
    "%ff",
    "%C0%AE",
    "%u002e",
    "%",
    "%%",
    "%zz",
    ";",
    "~",
    "*",
    "\\",
    "api",
    "tokens",
    "repos",
    "settings",
    "health",
    "user",
    "me",
    "login",
    "openapi.json",
    "rotate",
    "ws",
    "%E2%80%AE",
    "%F0%9F%92%A5",
    "a" * 300,
    "Z" * 12,
    "%20",
    "+",
    "@",
    ":",
]
CONTENT_TYPE_VALUES = [
    "application/json",
    "application/json",
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/json, text/plain",
    "application/json; charset=latin-1",
    "",
    "*/*",
    "application/json;;",
    "application/merge-patch+json",
]
EXTRA_HEADER_NAMES = [
    "X-Forwarded-For",
    "X-Real-IP",
    "Forwarded",
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Origin",
    "Referer",
    "User-Agent",
    "Range",
    "If-None-Match",
    "X-Requested-With",
    "Expect",
    "Cache-Control",
    "Pragma",
    "TE",
    "Via",
    "X-HTTP-Method-Override",
    "Sec-Fetch-Site",
]
FIELD_NAMES = [
    "name",
    "description",
    "scopes",
    "expires_at",
    "expires_in_days",
    "never_expires",
    "allowed_cidrs",
    "grace_seconds",
    "user_id",
    "id",
    "hash",
    "__proto__",
    "",
]
FORM_FIELDS = [
    "csrf_token",
    "action",
    "token_id",
    "name",
    "description",
    "expiration",
    "expires_on",
    "scope",
    "scopes",
    "next",
]


def odd_text(rng: random.Random, longest: int = 40) -> str:
    pool = ODD_CHARS + list("abcXYZ019:_-")
    return "".join(rng.choice(pool) for _ in range(rng.randint(0, longest)))


def odd_token(rng: random.Random, server: Server) -> str:
    """A token-like value: valid, or one defect away from valid, or none at all."""
    t = rng.choice((*server.valid_tokens, server.revoked))
    kind = rng.randrange(12)
    if kind == 0:
        return t
    if kind == 1:  # one character changed: the checksum catches it
        i = rng.randrange(len(t))
        return t[:i] + rng.choice(BASE62) + t[i + 1 :]
    if kind == 2:  # valid checksum, unknown key id
        return with_checksum("pat_" + random_base62(rng, 44))
    if kind == 3:  # valid checksum, known key id, wrong secret (a cold argon2 run, then the throttle)
        return with_checksum(t[:16] + random_base62(rng, 32))
    if kind == 4:
        return rng.choice(PREFIXES) + rng.choice(["_", "-", ""]) + t[4:]
    if kind == 5:
        return with_checksum(rng.choice(PREFIXES) + "_" + t[4:-6])
    if kind == 6:
        return t[: rng.randrange(len(t))] if rng.random() < 0.5 else t + random_base62(rng, rng.randint(1, 20))
    if kind == 7:
        return odd_text(rng, rng.choice([10, 100, 3000]))
    if kind == 8:  # an odd character inside a valid token
        i = rng.randrange(len(t))
        return t[:i] + rng.choice(ODD_CHARS) + t[i:]
    if kind == 9:
        return rng.choice([",", " ", ", ", ""]).join([t, rng.choice(server.valid_tokens)])
    if kind == 10:
        return t + "=" * rng.randint(1, 5)
    return "".join(rng.choice(string.ascii_letters + string.digits + "-._~+/") for _ in range(rng.randint(1, 200)))


def odd_authorization(rng: random.Random, server: Server) -> bytes:
    value = (rng.choice(SCHEMES) + rng.choice(SEPARATORS) + odd_token(rng, server) + rng.choice(SUFFIXES)).encode()
    if rng.random() < 0.1:  # latin-1 / invalid UTF-8 bytes somewhere
        i = rng.randrange(len(value) + 1)
        value = value[:i] + rng.choice(ODD_BYTES) + value[i:]
    if rng.random() < 0.05:
        value = value.replace(b" ", b" " * rng.randint(2, 3000), 1)
    return value


def odd_json_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(10 if depth < 3 else 7)
    if kind == 0:
        return odd_text(rng)
    if kind == 1:
        return rng.choice([0, -1, 1, 7, 30, 366, 367, 100000, 2**63, -(2**70), 10**30])
    if kind == 2:
        return rng.choice([1.5, -0.0, 1e300, 7.0])
    if kind == 3:
        return rng.choice([True, False, None])
    if kind == 4:
        return rng.choice(
            [
                "repo:read",
                "tokens:manage",
                "admin",
                "2030-01-01T00:00:00Z",
                "9999-12-31T23:59:59+14:00",
                "0.0.0.0/0",
                "::/0",
                "300.1.1.1/8",
                "",
                " ",
                "a" * rng.randint(100, 5000),
            ]
        )
    if kind == 5:
        return "".join(rng.choice(["\\u0000", "\\ud800", "\\udfff", "\u202e", "x"]) for _ in range(rng.randint(1, 5)))
    if kind == 6:
        return rng.choice(["repo:read", "events:read", "repo:write"])
    if kind == 7:
        return [odd_json_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    if kind == 8:
        return {rng.choice(FIELD_NAMES): odd_json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    return [odd_json_value(rng, depth + 1)] * rng.randint(90, 120)


def odd_json(rng: random.Random) -> bytes:
    """A request body: mostly a JSON object with odd fields, else something broken."""
    kind = rng.randrange(10)
    if kind < 6:
        fields = {rng.choice(FIELD_NAMES): odd_json_value(rng) for _ in range(rng.randint(0, 5))}
        if rng.random() < 0.7:
            fields["name"] = f"sweep {rng.randrange(10**9)}" if rng.random() < 0.6 else odd_json_value(rng)
        text = json.dumps(fields, ensure_ascii=rng.random() < 0.5)
        return text.replace('"\\\\u', '"\\u').encode("utf-8", "surrogatepass")  # keep the escapes meant as escapes
    if kind == 6:  # cut short
        text = json.dumps({"name": "cut", "scopes": ["repo:read"]})
        return text[: rng.randrange(len(text))].encode()
    if kind == 7:  # deep
        depth = rng.choice([50, 900, 1100, 20000])
        return b'{"name": ' + b"[" * depth + b"]" * depth * rng.randint(0, 1) + b"}"
    if kind == 8:  # invalid bytes in a string
        return b'{"name": "' + rng.choice(ODD_BYTES) + b'"}'
    return rng.choice(
        [
            b"",
            b" ",
            b"[]",
            b"null",
            b"1",
            b'"x"',
            b"{" * 3,
            b'{"name": "big", "description": "' + b"d" * rng.choice([10, 70 * KIB]) + b'"}',
        ]
    )


def odd_path(rng: random.Random) -> str:
    path = "/" + "/".join(rng.choice(SEGMENTS) for _ in range(rng.randint(0, 5)))
    if rng.random() < 0.3:
        path += "?" + "&".join(
            f"{rng.choice(['access_token', 'state', 'done', 'next', 'a', '%61ccess_token'])}={odd_text(rng, 10)}"
            for _ in range(rng.randint(1, 4))
        )
    return path.replace(" ", "%20").replace("#", "%23")


def _framing(headers: Sequence[tuple[Bytes, Bytes]], target: bytes) -> str:
    """Why a sweep request may be answered by a close: CR/LF inside a header, or raw bytes in
    the request line, break HTTP framing; many kilobytes of headers cross server limits."""
    values = [as_bytes(v) for _, v in headers]
    if any(b"\r" in v or b"\n" in v for v in values) or any(c < 0x21 or c > 0x7E for c in target):
        return BROKEN_FRAMING
    if sum(len(v) for v in values) > 4 * KIB or len(headers) > 60 or len(target) > 2 * KIB:
        return OVER_LIMIT
    return ""


def sweep_case(rng: random.Random, server: Server, i: int) -> Case:
    """One random request: auth on token routes, the API, the page's forms, paths and headers."""
    area = rng.choices(["auth", "api", "form", "path", "headers"], weights=[40, 25, 10, 15, 10])[0]
    headers: list[tuple[Bytes, Bytes]] = []
    body = b""
    method = "GET"
    accepted = [s for u, s in server.sessions.items() if s.csrf]  # page-safe sessions (see REFUSED_USERS)
    if area == "auth":
        target = rng.choice(server.shape.token_routes + server.shape.routes)
        method = rng.choice(["GET", "GET", "HEAD", "POST"])
        for _ in range(rng.choices([0, 1, 2, 3], weights=[5, 85, 7, 3])[0]):
            headers.append(("Authorization", odd_authorization(rng, server)))
        if rng.random() < 0.15:
            target += "?access_token=" + odd_token(rng, server)
    elif area == "api":
        victims = rng.choice([server.victims, server.carol_victims])
        token_id = rng.choice([*victims, "Z" * 12, random_base62(rng, 12), "%00", "..", "a" * 13, "%C3%A9" * 12, ""])
        target = rng.choice(
            ["/api/tokens", f"/api/tokens/{token_id}", f"/api/tokens/{token_id}/rotate", "/api/openapi.json"]
        )
        if rng.random() < 0.2:
            target += "?state=" + rng.choice(["active", "all", "revoked", "inactive", "%FF", "", "x" * 100])
        method = rng.choice(["GET", "POST", "POST", "PATCH", "PATCH", "DELETE", "PUT", "HEAD"])
        who = rng.randrange(5)
        if who == 0:
            headers.append(("Cookie", rng.choice(list(server.sessions.values())).cookie))
        elif who == 1:
            headers.append(("Authorization", f"Bearer {server.manager}"))
        elif who == 2:
            headers.append(("Authorization", odd_authorization(rng, server)))
        elif who == 3:
            headers.append(("Cookie", server.sessions["alice"].cookie))
        if method in ("POST", "PATCH", "PUT"):
            body = odd_json(rng)
            content_type = rng.choice(CONTENT_TYPE_VALUES)
            if content_type:
                headers.append(("Content-Type", content_type))
    elif area == "form":
        target, method = "/settings/tokens" + rng.choice(["", "", "?done=" + odd_text(rng, 8)]), "POST"
        session = rng.choice(accepted)
        headers.append(("Cookie", session.cookie))
        fields = [("csrf_token", session.csrf or "")] if rng.random() < 0.85 else []
        for _ in range(rng.randint(0, 6)):
            name = rng.choice(FORM_FIELDS)
            value = {
                "action": rng.choice(["create", "rotate", "rename", "revoke", odd_text(rng, 8)]),
                "token_id": rng.choice([*server.victims, "Z" * 12, odd_text(rng, 14)]),
                "expiration": rng.choice(["7", "30", "custom", "never", "²", "-1", "0", odd_text(rng, 4)]),
                "scope": rng.choice(["repo:read", "tokens:manage", "admin", odd_text(rng, 10)]),
            }.get(name, odd_text(rng, rng.choice([10, 200])))
            fields.append((name, value))
        body = form_body(fields)
        if rng.random() < 0.1:
            body += b"&x=" + rng.choice(ODD_BYTES)
        headers.append(("Content-Type", rng.choice(["application/x-www-form-urlencoded"] * 4 + CONTENT_TYPE_VALUES)))
        if rng.random() < 0.5 and rng.random() < 0.3:
            method = "GET"
    elif area == "path":
        method = rng.choice(METHODS)
        target = odd_path(rng)
        if rng.random() < 0.5:
            headers.append(("Authorization", odd_authorization(rng, server)))
        if rng.random() < 0.3:
            headers.append(("Cookie", rng.choice(accepted).cookie))
    else:
        method, target = rng.choice(METHODS[:6]), rng.choice([*server.shape.routes, *MANAGEMENT])
        for _ in range(rng.choice([1, 2, 5, 20, 80])):
            name = rng.choice([*EXTRA_HEADER_NAMES, "Authorization", "Cookie", "Content-Type", "X-" + odd_text(rng, 5)])
            name = re.sub(r"[^A-Za-z0-9-]", "", name) or "X-Empty"
            value = odd_text(rng, rng.choice([10, 100, 1000])).encode() if rng.random() < 0.9 else rng.choice(ODD_BYTES)
            headers.append((name, value))
    if rng.random() < 0.02:  # a CR or LF inside a header value
        headers.append(("X-Split", rng.choice([b"a\rb", b"a\nb", b"a\r\nInjected: 1", b"\r"])))
    data = http_request(method, target, headers, body, length=bool(body) or method in ("POST", "PATCH", "PUT"))
    token_route = target.split("?")[0] in server.shape.token_routes
    return Case(f"sweep #{i} {area}", data, _framing(headers, as_bytes(target)), token_route=token_route)


def sweep_cases(server: Server, rng: random.Random, n: int) -> list[Case]:
    return [sweep_case(rng, server, i) for i in range(n)]


# -- the tests ------------------------------------------------------------------------------------


def test_explicit_hostile_requests(server: Server) -> None:
    cases = explicit_cases(server)
    with watched(server) as logged:
        problems, seen, sent = send_all(server, cases)
    assert sent == len(cases), f"only {sent} of {len(cases)} requests were sent in time"
    assert_clean(problems, seen, sent, logged)


def test_seeded_sweep(server: Server) -> None:
    """A few thousand seeded random requests (the same ones every run, per server)."""
    rng = random.Random(f"{SWEEP_SEED}-{server.kind}")
    cases = sweep_cases(server, rng, SWEEP_REQUESTS)
    with watched(server) as logged:
        problems, seen, sent = send_all(server, cases, SWEEP_BUDGET)
    assert sent >= SWEEP_MINIMUM, f"only {sent} of {len(cases)} requests were answered in {SWEEP_BUDGET}s"
    assert_clean(problems, seen, sent, logged)


@pytest.mark.parametrize("known", FIXED, ids=[k.id for k in FIXED])
def test_fixed_failures(server: Server, known: Known) -> None:
    """Requests that answered 500 or logged a traceback before their fix (on the
    servers in ``known.kinds``); now clean everywhere."""
    cases = known.cases(server)
    with watched(server) as logged:
        problems, seen, sent = send_all(server, cases)
    assert_clean(problems, seen, sent, logged)
