"""Every Python block of README.md and docs/*.md runs as pasted.

A file's blocks run in order in one namespace (later blocks may use what
earlier ones defined, as a reader pasting them in order would), in a fresh
directory, so ``sqlite:///tokens.db`` lands there. Redis URLs in the blocks
(``cache_url="redis://localhost:6379/0"``) are pointed at the test Redis,
under a key prefix of this test. A block preceded
by ``<!-- not run: why -->`` is an excerpt of a file that only a tool runs
(an Alembic migration, say); the test lists them with their reasons.

After a file's blocks ran, an ``app`` they built is tried for real: a route
``/repos`` must answer 401 without a token and 200 with a token minted with
``repo:read`` by the ``PATAuth`` the blocks configured.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from pat_middleware import PATAuth

ROOT = Path(__file__).resolve().parent.parent
ALL_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: The files with Python blocks (the others have nothing to run).
FILES = [path for path in ALL_FILES if "```python" in path.read_text()]
_BLOCK = re.compile(r"(?:<!-- not run: (?P<why>[^>]*?) -->\s*\n)?```python\n(?P<code>.*?)```", re.DOTALL)
_REDIS = 'cache_url="redis://localhost:6379/0"'


def blocks(path: Path) -> list[tuple[int, str, str | None]]:
    """(line, code, reason not run) of each Python block."""
    text = path.read_text()
    return [(text.count("\n", 0, m.start("code")) + 1, m.group("code"), m.group("why")) for m in _BLOCK.finditer(text)]


def test_every_file_has_blocks_and_every_skip_says_why() -> None:
    found = {path.name: blocks(path) for path in ALL_FILES}
    assert found["README.md"], "README.md has no python blocks: the pattern is wrong"
    skipped = [(name, line, why) for name, items in found.items() for line, _, why in items if why is not None]
    assert all(why.strip() for _, _, why in skipped)
    assert len(skipped) <= 6, skipped


def _auth_of(namespace: dict[str, Any]) -> PATAuth | None:
    """The ``PATAuth`` behind ``app``: a Flask app's extension, else the blocks' ``auth``."""
    app = namespace.get("app")
    if isinstance(app, Flask) and "pat" in app.extensions:
        auth: PATAuth = app.extensions["pat"].auth
        return auth
    auth = namespace.get("auth")
    return auth if isinstance(auth, PATAuth) else None


def _try_app(app: Any, auth: PATAuth) -> None:
    """``/repos``: 401 without a token, 200 with a repo:read one."""
    name = f"snippet-{uuid.uuid4().hex[:8]}"
    token = auth.manager.create("snippet", name, ["repo:read"], expires_in=timedelta(days=1)).token
    if isinstance(app, Flask):
        client = app.test_client()
        assert client.get("/repos").status_code == 401
        assert client.get("/repos", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        return
    from starlette.testclient import TestClient

    client = TestClient(app)  # no lifespan: a block's shutdown hook would close the shared auth
    assert client.get("/repos").status_code == 401
    assert client.get("/repos", headers={"Authorization": f"Bearer {token}"}).status_code == 200


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_blocks_run_as_pasted(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str, redis_prefix: str
) -> None:
    found = blocks(path)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": f"snippets_{path.stem}"}
    apps_tried = []
    try:
        for line, code, why in found:
            if why is not None:
                continue
            app_before = namespace.get("app")
            code = code.replace(_REDIS, f'cache_url="{redis_url}", cache_prefix="{redis_prefix}"')
            try:
                exec(compile(code, f"{path.name}:{line}", "exec"), namespace)
            except Exception as exc:
                pytest.fail(f"{path.name}, the block at line {line} fails as pasted: {exc!r}")
            app, auth = namespace.get("app"), _auth_of(namespace)
            if app is not None and app is not app_before and auth is not None and _has_repos(app):
                _try_app(app, auth)  # each app a block builds, as soon as it is built
                apps_tried.append(line)
    finally:
        for value in list(namespace.values()):
            if isinstance(value, PATAuth):
                asyncio.run(value.aclose())
            if isinstance(value, Flask) and "pat" in value.extensions:
                value.extensions["pat"].auth.close()
    if path.name in {"README.md", "starlette.md", "flask.md"}:
        assert apps_tried, f"{path.name}: no block built an app with /repos to try"


def _has_repos(app: Any) -> bool:
    if isinstance(app, Flask):
        return any(rule.rule == "/repos" for rule in app.url_map.iter_rules())
    return any(getattr(route, "path", None) == "/repos" for route in getattr(app, "routes", ()))
