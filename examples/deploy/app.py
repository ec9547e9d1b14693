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
from collections.abc import Callable, Mapping
from typing import TypeVar

from examples.starlette_app import create_app
from pat_middleware import PATAuth, RedisCache, store_from_url

__all__ = ["app", "auth_from_env"]

N = TypeVar("N", int, float)


def _number(env: Mapping[str, str], name: str, default: N, kind: Callable[[str], N], low: N) -> N:
    """``env[name]`` as a number ``>= low``, or ``default`` when unset or empty."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not value >= low:  # also rejects NaN
        raise ValueError(f"{name} must be a number >= {low}, not {raw!r}")
    return value


def auth_from_env(env: Mapping[str, str] = os.environ) -> PATAuth:
    """A :class:`PATAuth` from the ``PAT_*`` variables of ``.env.example``."""
    store_url = env.get("PAT_STORE_URL", "").strip()
    if not store_url:
        raise ValueError("PAT_STORE_URL is not set (e.g. postgresql://app@db.internal/app)")
    cache = None
    cache_url = env.get("PAT_CACHE_URL", "").strip()
    if cache_url:
        cache = RedisCache(
            cache_url,
            prefix=env.get("PAT_CACHE_PREFIX") or "pat:",
            socket_timeout=_number(env, "PAT_REDIS_TIMEOUT", 0.25, float, 0.01),
            tombstone_ttl=_number(env, "PAT_TOMBSTONE_TTL", 5.0, float, 0.0),
        )
    return PATAuth(
        store_from_url(store_url),
        cache=cache,
        hash_workers=_number(env, "PAT_HASH_WORKERS", 2, int, 1),
        local_ttl=_number(env, "PAT_LOCAL_TTL", 5.0, float, 0.0),
        subscribed_ttl=_number(env, "PAT_SUBSCRIBED_TTL", 300.0, float, 0.0),
        shared_ttl=_number(env, "PAT_SHARED_TTL", 300.0, float, 0.0),
    )


#: For ``gunicorn -c examples/deploy/gunicorn.conf.py`` (or ``uvicorn examples.deploy.app:app``).
#: (Importing ``examples.starlette_app`` also builds that module's own ``app``;
#: it stays unused and, like every PATAuth, opens nothing until first used.)
app = create_app(auth_from_env())
