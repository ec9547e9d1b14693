"""``PATAuth`` from ``PAT_*`` environment variables (twelve-factor style).

=========================  =============================================  ==================
variable                   meaning                                        default
=========================  =============================================  ==================
``PAT_STORE_URL``          the token store (``store_from_url``)           ``sqlite:///pat_tokens.db``
``PAT_CACHE_URL``          Redis shared cache + invalidation channel      none
``PAT_CACHE_PREFIX``       Redis key and channel namespace                ``pat:``
``PAT_PREFIX``             token prefix                                   ``pat``
``PAT_REALM``              ``realm`` of the challenges                    ``api``
``PAT_LOCAL_TTL``          see ``PATAuth`` (seconds)                      5
``PAT_SUBSCRIBED_TTL``     see ``PATAuth`` (seconds)                      300
``PAT_SHARED_TTL``         see ``PATAuth`` (seconds)                      60
``PAT_TOMBSTONE_TTL``      see ``RedisCache`` (seconds)                   5
``PAT_REDIS_TIMEOUT``      Redis connect/reply timeout (seconds)          0.25
``PAT_HASH_WORKERS``       argon2 runs at once in async code              2
=========================  =============================================  ==================

Unset or empty variables take the default. A malformed value raises
``ValueError`` naming the variable, so a worker stops at start-up with one
clear line instead of failing at its first request.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .auth import PATAuth

__all__ = ["VARIABLES", "auth_from_env"]

DEFAULT_STORE_URL = "sqlite:///pat_tokens.db"

#: Every variable :func:`auth_from_env` reads.
VARIABLES = (
    "PAT_STORE_URL",
    "PAT_CACHE_URL",
    "PAT_CACHE_PREFIX",
    "PAT_PREFIX",
    "PAT_REALM",
    "PAT_LOCAL_TTL",
    "PAT_SUBSCRIBED_TTL",
    "PAT_SHARED_TTL",
    "PAT_TOMBSTONE_TTL",
    "PAT_REDIS_TIMEOUT",
    "PAT_HASH_WORKERS",
)

N = TypeVar("N", int, float)


def _number(env: Mapping[str, str], name: str, kind: Callable[[str], N], low: N) -> N | None:
    """``env[name]`` as a number ``>= low``; ``None`` when unset or empty."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value: N | None = kind(raw)
    except ValueError:
        value = None
    if value is None or not value >= low:  # also refuses NaN
        raise ValueError(f"{name} must be a number >= {low}, not {raw!r}")
    return value


def auth_from_env(env: Mapping[str, str] | None = None, **options: Any) -> PATAuth:
    """A :class:`~pat_middleware.auth.PATAuth` from the ``PAT_*`` variables of ``env``
    (default ``os.environ``); ``options`` are passed on and win over the variables."""
    from .auth import PATAuth
    from .stores import store_from_url

    env = os.environ if env is None else env
    settings: dict[str, Any] = {}
    for name, key in (("PAT_PREFIX", "prefix"), ("PAT_REALM", "realm")):
        if value := env.get(name, "").strip():
            settings[key] = value
    for name, key, kind, low in (
        ("PAT_LOCAL_TTL", "local_ttl", float, 0.0),
        ("PAT_SUBSCRIBED_TTL", "subscribed_ttl", float, 0.0),
        ("PAT_SHARED_TTL", "shared_ttl", float, 0.0),
        ("PAT_HASH_WORKERS", "hash_workers", int, 1),
    ):
        if (number := _number(env, name, kind, low)) is not None:
            settings[key] = number
    cache_url = env.get("PAT_CACHE_URL", "").strip()
    if cache_url:
        from .redis_cache import RedisCache

        redis_options: dict[str, Any] = {"prefix": env.get("PAT_CACHE_PREFIX", "").strip() or "pat:"}
        if (timeout := _number(env, "PAT_REDIS_TIMEOUT", float, 0.01)) is not None:
            redis_options["socket_timeout"] = timeout
        if (tombstone := _number(env, "PAT_TOMBSTONE_TTL", float, 0.0)) is not None:
            redis_options["tombstone_ttl"] = tombstone
        settings["cache"] = RedisCache(cache_url, **redis_options)
    store = store_from_url(env.get("PAT_STORE_URL", "").strip() or DEFAULT_STORE_URL)
    return PATAuth(store, **{**settings, **options})
