"""How a ``pat`` command finds its :class:`~pat_middleware.auth.PATAuth`: the app's own
(``pat --app``), the ``--store``/``--cache`` options of ``pat`` with the other ``PAT_*``
variables, or the loader of a host group such as ``flask pat``."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from pat_middleware.auth import PATAuth
from pat_middleware.cache.local import SharedCache
from pat_middleware.config import DEFAULT_STORE_URL as DEFAULT_STORE_URL
from pat_middleware.config import settings_from_env
from pat_middleware.core import defaults
from pat_middleware.core.tokens import validate_prefix
from pat_middleware.stores import store_from_url

T = TypeVar("T")

AUTH_KEY = "pat_middleware.auth"
FACTORY_KEY = "pat_middleware.auth_factory"
LOADER_ATTR = "pat_load_auth"


def current_auth() -> PATAuth:
    """The ``PATAuth`` of the running command, built once per invocation.

    Looked up in order: a loader given to :func:`register_commands` on an
    enclosing group; a ``PATAuth`` passed as the context object
    (``runner.invoke(main, args, obj=auth)``); the store of ``pat --store``.
    An auth the command made (from ``--store``, or an ``--app`` factory) is
    closed when the command ends.
    """
    ctx = click.get_current_context()
    cached = ctx.meta.get(AUTH_KEY)
    if isinstance(cached, PATAuth):
        return cached
    auth: PATAuth | None = None
    walk: click.Context | None = ctx
    while walk is not None and auth is None:
        loader = getattr(walk.command, LOADER_ATTR, None)
        if loader is not None:
            auth = loader()
        walk = walk.parent
    if auth is None:
        obj = ctx.find_object(PATAuth)
        if obj is not None:
            auth = obj
    if auth is None:
        factory = ctx.meta.get(FACTORY_KEY) or _default_factory
        auth, owned = factory()
        if owned:
            ctx.find_root().call_on_close(auth.close)
    ctx.meta[AUTH_KEY] = auth
    return auth


def _default_factory() -> tuple[PATAuth, bool]:
    try:
        return PATAuth.from_env(), True
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    except ImportError as exc:
        raise click.ClickException(str(exc)) from None


_STORE_HINT = "--store / PAT_STORE_URL"
_CACHE_HINT = "--cache / PAT_CACHE_URL"


def _open_url(url: str, hint: str, opener: Callable[[str], T]) -> T:
    """``opener(url)``; a bad URL is a usage error naming the option it came from."""
    try:
        return opener(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None
    except ImportError as exc:
        raise click.ClickException(str(exc)) from None


def _redis_cache(url: str, options: dict[str, Any]) -> SharedCache:
    from pat_middleware.cache.redis import RedisCache

    return RedisCache(url, **options)


def build_auth(
    store_url: str,
    cache_url: str | None,
    cache_prefix: str = defaults.CACHE_PREFIX,
    prefix: str = defaults.TOKEN_PREFIX,
    env: Mapping[str, str] | None = None,
) -> PATAuth:
    """The ``PATAuth`` of ``pat --store``: the store, cache and prefixes of the options, every
    other setting (the hasher, TTLs, realm...) from the ``PAT_*`` variables of ``env``."""
    try:
        validate_prefix(prefix)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--prefix / PAT_PREFIX") from None
    given = dict(os.environ if env is None else env)
    given.update(PAT_CACHE_PREFIX=cache_prefix, PAT_PREFIX=prefix)
    try:
        settings, redis_options = settings_from_env(given)
    except ValueError as exc:  # names its variable
        raise click.ClickException(str(exc)) from None
    store = _open_url(store_url, _STORE_HINT, store_from_url)
    try:
        cache = _open_url(cache_url, _CACHE_HINT, lambda url: _redis_cache(url, redis_options)) if cache_url else None
    except BaseException:
        store.close()
        raise
    return PATAuth(store, cache=cache, **settings)
