"""An example app with one addition for the deployment tests: every HTTP
response carries ``X-Worker-PID``, so a test can tell which worker served it.

``PAT_TEST_APP`` names the wrapped app (``module:attribute``, default
``examples.starlette_app:app``). Run as ``uvicorn tests.deploy_app:app``.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

_module, _, _attribute = os.environ.get("PAT_TEST_APP", "examples.starlette_app:app").partition(":")
inner: Any = getattr(importlib.import_module(_module), _attribute)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``inner`` with an ``x-worker-pid`` header on HTTP responses; lifespan passes through."""
    if scope["type"] != "http":
        await inner(scope, receive, send)
        return

    async def send_with_pid(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"x-worker-pid", b"%d" % os.getpid())]}
        await send(message)

    await inner(scope, receive, send_with_pid)
