"""The example API (``examples/starlette_app.py``) configured from the environment,
for N workers on N hosts sharing PostgreSQL and Redis.

Each worker process imports this module and builds its own :class:`PATAuth`:
its own database pool, Redis clients, invalidation listener and local
cache. The variables, their defaults and what each one means for revocation
delay and failure behaviour are in ``.env.example`` and
``docs/deployment.md``. A bad value stops the worker at start-up with a
one-line error instead of surfacing at the first request.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from examples.starlette_app import create_app
from pat_middleware import PATAuth

__all__ = ["app", "auth_from_env"]


def auth_from_env(env: Mapping[str, str] = os.environ) -> PATAuth:
    """A :class:`PATAuth` from the ``PAT_*`` variables of ``.env.example``
    (:mod:`pat_middleware.config`); here the store URL is required."""
    if not env.get("PAT_STORE_URL", "").strip():
        raise ValueError("PAT_STORE_URL is not set (e.g. postgresql://app@db.internal/app)")
    return PATAuth.from_env(env)


#: For ``gunicorn -c examples/deploy/gunicorn.conf.py`` (or ``uvicorn examples.deploy.app:app``).
#: (Importing ``examples.starlette_app`` also builds that module's own ``app``;
#: it stays unused and, like every PATAuth, opens nothing until first used.)
app = create_app(auth_from_env())
