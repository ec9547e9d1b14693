"""``run_demo``: the example API on a local port, with tokens and curl lines to try.

No Redis and no configuration: the tokens live in an SQLite file. The ``pat
demo`` command calls :func:`run_demo`; it can be called directly too::

    python -c "from pat_middleware.demo import run_demo; run_demo()"
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import shlex
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

from pat_middleware.auth import PATAuth
from pat_middleware.environ import DEFAULT_STORE_URL

__all__ = ["DEMO_USER", "LOGIN_FORM", "SCOPES", "DemoError", "Example", "examples", "run_demo", "user_from_form"]

DEMO_USER = "demo"
#: Scopes of the working demo token: enough to read, not to write.
DEMO_SCOPES = ("repo:read", "events:read")


# -- what both example apps share for their settings page --------------------------
# A demo login (a user name, no password): for the examples only. A real app
# plugs in its own session authentication as ``current_user``.
#: Scopes offered on the settings page (scope -> description).
SCOPES = {
    "repo:read": "Read repositories",
    "repo:write": "Create repositories",
    "events:read": "Receive events (WebSocket)",
    "tokens:manage": "Manage tokens through the API",
}

LOGIN_FORM = """<!doctype html><meta charset="utf-8"><title>Demo login</title>
<h1>Demo login (no password: for the example only)</h1>
<form method="post" action="/login"><label for="username">User name</label>
<input id="username" name="username" required autofocus><button type="submit" id="login">Log in</button></form>"""

#: Where the login sends the user.
AFTER_LOGIN = "/settings/tokens"


def user_from_form(value: object) -> str | None:
    """The user name a login form submitted, or None."""
    name = value.strip() if isinstance(value, str) else ""
    return name[:100] or None


@dataclass(frozen=True)
class Example:
    """One request to try and the status it must get."""

    expect: int
    why: str
    method: str
    path: str
    token: str | None = None
    json_body: str | None = None

    def curl(self, base_url: str) -> str:
        """The request as a ready-to-paste curl command line."""
        words = ["curl", "-i"]
        if self.method != "GET":
            words += ["-X", self.method]
        if self.token is not None:
            words += ["-H", f"Authorization: Bearer {self.token}"]
        if self.json_body is not None:
            words += ["-H", "Content-Type: application/json", "-d", self.json_body]
        words.append(base_url + self.path)
        return shlex.join(words)


def examples(token: str, revoked: str) -> list[Example]:
    """The requests the demo prints: one that works, the rest failing as they should."""
    body = '{"name": "hello-world"}'
    return [
        Example(200, "a token with repo:read lists repositories", "GET", "/repos", token),
        Example(200, "any valid token: who am I?", "GET", "/user", token),
        Example(401, "no token on a protected route", "GET", "/repos"),
        Example(403, "POST /repos needs repo:write; the token has repo:read", "POST", "/repos", token, body),
        Example(401, "a revoked token", "GET", "/repos", revoked),
    ]


def _mint(auth: PATAuth) -> tuple[str, str]:
    """A working demo token and a revoked one (earlier demo tokens are revoked first)."""
    manager = auth.manager
    manager.revoke_all(DEMO_USER)
    token = manager.create(DEMO_USER, "demo", DEMO_SCOPES, expires_in=timedelta(days=1)).token
    revoked = manager.create(DEMO_USER, "demo (revoked)", DEMO_SCOPES, expires_in=timedelta(days=1))
    manager.revoke(revoked.record.id)
    return token, revoked.token


def _example_factory() -> Callable[[PATAuth], Any]:
    """``create_app`` of ``examples/starlette_app.py``: from the source checkout, else
    the copy the wheel carries in ``pat_middleware/_examples``."""
    here = Path(__file__).resolve().parent
    candidates = [here.parent / "examples" / "starlette_app.py", here / "_examples" / "starlette_app.py"]
    path = next((p for p in candidates if p.is_file()), candidates[0])
    spec = importlib.util.spec_from_file_location("pat_middleware_example_app", path)
    if not path.is_file() or spec is None or spec.loader is None:
        raise ImportError(f"the demo needs the example app, not found at {path}", name="examples.starlette_app")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    factory: Callable[[PATAuth], Any] = module.create_app
    return factory


class DemoError(Exception):
    """The demo cannot start: a host that does not resolve, a port in use, a bad store URL.

    ``option`` names the command-line option at fault when the value itself is bad
    (``--host``, ``--store / PAT_STORE_URL``), else None (e.g. the port is taken)."""

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, or :class:`DemoError`."""
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        raise DemoError(f"cannot open a socket: {exc.strerror or exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except socket.gaierror as exc:
        sock.close()
        raise DemoError(f"cannot resolve host {host!r}: {exc.strerror or exc}", "--host") from exc
    except (OSError, OverflowError) as exc:
        sock.close()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DemoError(f"cannot listen on {host}:{port}: {reason}") from exc
    return sock


def _open_auth(store_url: str) -> PATAuth:
    try:
        return PATAuth.from_url(store_url)
    except ValueError as exc:
        raise DemoError(str(exc), "--store / PAT_STORE_URL") from exc


def _print_intro(out: TextIO, base_url: str, store: str, token: str, lines: list[Example]) -> None:
    print(f"pat-middleware demo: {base_url}  (store: {store}; Ctrl-C stops it)", file=out)
    print(f"demo token for user {DEMO_USER!r}, scopes {' '.join(DEMO_SCOPES)}:\n  {token}\n", file=out)
    for example in lines:
        print(f"# expect {example.expect}: {example.why}", file=out)
        print(example.curl(base_url), file=out)
    print(f"\ntoken settings page: {base_url}/login (log in as {DEMO_USER!r} to see the demo tokens)", file=out)
    print(f"management API: {base_url}/api/tokens, OpenAPI at {base_url}/api/openapi.json", file=out)
    print(file=out, flush=True)


def run_demo(
    store_url: str = DEFAULT_STORE_URL, host: str = "127.0.0.1", port: int = 0, *, out: TextIO | None = None
) -> None:
    """Serve ``examples/starlette_app.py`` on ``host:port`` (0: a free port) until Ctrl-C.

    Mints a demo token (user ``demo``, scopes ``repo:read events:read``) and a
    revoked one in the store at ``store_url``, then prints curl lines with the
    status each must get. Needs uvicorn (``pat-middleware[starlette]``).

    Raises :class:`DemoError` when it cannot start (host, port or store URL).
    """
    import uvicorn

    create_app = _example_factory()
    out = out or sys.stdout
    sock = _listen(host, port)  # before any token is minted
    try:
        auth = _open_auth(store_url)
    except BaseException:
        sock.close()
        raise
    try:
        token, revoked = _mint(auth)
    except BaseException:
        auth.close()
        sock.close()
        raise
    bound_port = sock.getsockname()[1]
    display_host = f"[{host}]" if ":" in host else host
    base_url = f"http://{display_host}:{bound_port}"
    config = uvicorn.Config(create_app(auth), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if server.started:
            _print_intro(out, base_url, type(auth.store).__name__, token, examples(token, revoked))
        await task

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve())
    finally:
        sock.close()
        auth.close()  # the app's lifespan closed it already when the server stopped cleanly
    print("demo stopped", file=out, flush=True)
