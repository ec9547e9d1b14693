"""``settings.PAT``: read and checked once, at start-up, with errors naming the key.

===================  =====================================================  =========================
key                  meaning                                                default
===================  =====================================================  =========================
``STORE_URL``        a store URL (``store_from_url``) instead of the        ``None``: the Django
                     Django database                                        database (``DjangoStore``)
``DATABASE``         the database alias of ``DjangoStore``                  ``"default"``
``CACHE_URL``        Redis shared cache and invalidation channel            ``None``
``CACHE_PREFIX``     Redis key and channel namespace                        ``"pat:"``
``PREFIX``           token prefix                                           ``"pat"``
``REALM``            ``realm`` of the challenges                            ``"api"``
``POLICY``           a ``Policy`` (or its dotted path)                      ``Policy()``
``HASHER``           a ``Hasher`` (or its dotted path)                      ``Argon2Hasher()``
``LOCAL_TTL``        see ``PATAuth`` (seconds)                              5
``SUBSCRIBED_TTL``   see ``PATAuth`` (seconds)                              300
``SHARED_TTL``       see ``PATAuth`` (seconds)                              60
``REVOCATION_POLL``  seconds between polls of the change feed; ``None``     5
``HASH_WORKERS``     argon2 runs at once in the process                     2
``AUTH``             a ready ``PATAuth`` (or the dotted path of one, or     ``None``
                     of a function returning one); the keys above must
                     then be unset
``REQUIRED``         every path needs a token, except ``EXEMPT`` ones       ``False``
``EXEMPT``           path prefixes exempt from ``REQUIRED``                 ``()``
``ALLOW_QUERY_TOKEN`` accept ``?access_token=``                             ``False``
``EXPIRY_HEADER``    response header with the token's expiry; ``None``      ``"PAT-Token-Expiration"``
``USER_RESOLVER``    ``(principal) -> user or None`` (or its dotted path)   the user whose pk is
                     for ``request.user``                                   ``user_id`` (active only)
``MANAGE_SCOPE``     scope a token needs to use the management API          ``"tokens:manage"``
``AVAILABLE_SCOPES`` scopes the settings page offers (list or dict)         the policy's
``LOGIN_URL``        where the settings page sends anonymous visitors       ``settings.LOGIN_URL``
===================  =====================================================  =========================
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from pat_middleware.config import check_cache_prefix
from pat_middleware.core import defaults, limits
from pat_middleware.core.edge import EXPIRY_HEADER, ExemptPaths, expiry_header_name
from pat_middleware.core.hashing import Hasher
from pat_middleware.core.policy import Policy
from pat_middleware.core.scopes import requirement
from pat_middleware.core.tokens import validate_prefix
from pat_middleware.management.api import MANAGE_SCOPE

if TYPE_CHECKING:
    from pat_middleware.auth import PATAuth
    from pat_middleware.core.models import Principal

__all__ = [
    "KEYS", "PATSettings", "check_settings", "flush_log", "get_auth", "get_settings", "on_setting_changed", "reset",
]  # fmt: skip

#: The keys that build the engine (meaningless with ``AUTH``).
ENGINE_KEYS = (
    "STORE_URL", "DATABASE", "CACHE_URL", "CACHE_PREFIX", "PREFIX", "REALM", "POLICY", "HASHER",
    "LOCAL_TTL", "SUBSCRIBED_TTL", "SHARED_TTL", "REVOCATION_POLL", "HASH_WORKERS",
)  # fmt: skip
#: Every key ``settings.PAT`` may hold.
KEYS = (
    *ENGINE_KEYS, "AUTH", "REQUIRED", "EXEMPT", "ALLOW_QUERY_TOKEN", "EXPIRY_HEADER", "USER_RESOLVER",
    "MANAGE_SCOPE", "AVAILABLE_SCOPES", "LOGIN_URL",
)  # fmt: skip

UserResolver = Callable[["Principal"], Any]


@dataclass(frozen=True)
class PATSettings:
    """``settings.PAT``, checked: what the middleware, the views and :func:`get_auth` use."""

    auth: Callable[[], PATAuth]
    required: bool = False
    exempt: tuple[str, ...] = ()
    allow_query_token: bool = False
    expiry_header: str | None = EXPIRY_HEADER
    user_resolver: UserResolver | None = None
    manage_scope: str = MANAGE_SCOPE
    available_scopes: Sequence[str] | Mapping[str, str] | None = None
    login_url: str | None = None
    engine: dict[str, Any] = field(default_factory=dict)


def _key(name: str) -> str:
    return f'settings.PAT["{name}"]'


def _fail(name: str, problem: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"{_key(name)}: {problem}")


def _flag(raw: Mapping[str, Any], name: str, default: bool = False) -> bool:
    value = raw.get(name, default)
    if not isinstance(value, bool):
        raise _fail(name, f"must be True or False, not {type(value).__name__}")
    return value


def _text(raw: Mapping[str, Any], name: str, default: str | None = None) -> str | None:
    value = raw.get(name, default)
    if value is not None and not isinstance(value, str):
        raise _fail(name, f"must be a string or None, not {type(value).__name__}")
    return value


def _checked(name: str, check: Callable[[], Any]) -> Any:
    """``check()``, its ValueError or TypeError re-raised naming the key."""
    try:
        return check()
    except (ValueError, TypeError) as exc:
        raise _fail(name, str(exc)) from None


def _object(raw: Mapping[str, Any], name: str, kind: type | None = None) -> Any:
    """The value, or the object its dotted path names; checked against ``kind``."""
    value = raw.get(name)
    if isinstance(value, str):
        try:
            value = import_string(value)
        except ImportError as exc:
            raise _fail(name, f"cannot import {raw[name]!r}: {exc}") from None
    if value is not None and kind is not None and not isinstance(value, kind):
        raise _fail(name, f"must be a {kind.__name__} or its dotted path, not {type(value).__name__}")
    return value


def _engine(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The ``PATAuth`` options (and the store/cache choice) of the engine keys."""
    options: dict[str, Any] = {"realm": _checked("REALM", lambda: limits.realm(raw.get("REALM", defaults.REALM)))}
    prefix = _text(raw, "PREFIX", defaults.TOKEN_PREFIX) or defaults.TOKEN_PREFIX
    options["prefix"] = _checked("PREFIX", lambda: validate_prefix(prefix))
    for name in ("LOCAL_TTL", "SUBSCRIBED_TTL", "SHARED_TTL"):
        if name in raw:
            value = raw[name]
            options[name.lower()] = _checked(name, functools.partial(limits.seconds, "it", value))
    if "REVOCATION_POLL" in raw:
        poll = raw["REVOCATION_POLL"]
        options["revocation_poll"] = (
            None if poll is None else _checked("REVOCATION_POLL", lambda: limits.poll_interval("it", poll))
        )
    if "HASH_WORKERS" in raw:
        options["hash_workers"] = _checked("HASH_WORKERS", lambda: limits.count("it", raw["HASH_WORKERS"], high=256))
    if (policy := _object(raw, "POLICY", Policy)) is not None:
        options["policy"] = policy
    if (hasher := _object(raw, "HASHER")) is not None:
        if not isinstance(hasher, Hasher):
            raise _fail("HASHER", f"must be a Hasher (hash, verify, needs_rehash), not {type(hasher).__name__}")
        options["hasher"] = hasher
    cache_url = _text(raw, "CACHE_URL")
    prefix_value = _text(raw, "CACHE_PREFIX", defaults.CACHE_PREFIX) or defaults.CACHE_PREFIX
    cache_prefix = _checked("CACHE_PREFIX", lambda: check_cache_prefix(prefix_value, _key("CACHE_PREFIX")))
    database = _text(raw, "DATABASE", "default") or "default"
    if database not in settings.DATABASES:
        raise _fail("DATABASE", f"{database!r} is not in settings.DATABASES")
    return {
        "options": options,
        "store_url": _text(raw, "STORE_URL"),
        "database": database,
        "cache_url": cache_url,
        "cache_prefix": cache_prefix,
    }


def _build(engine: Mapping[str, Any]) -> PATAuth:
    from pat_middleware.auth import PATAuth
    from pat_middleware.stores import store_from_url

    if engine["store_url"]:
        store = store_from_url(engine["store_url"])
    else:
        from pat_middleware.django.store import DjangoStore

        store = DjangoStore(using=engine["database"])
    cache = None
    if engine["cache_url"]:
        from pat_middleware.cache.redis import RedisCache

        cache = RedisCache(engine["cache_url"], prefix=engine["cache_prefix"])
    return PATAuth(store, cache=cache, **engine["options"])


def _given_auth(raw: Mapping[str, Any]) -> Callable[[], PATAuth]:
    from pat_middleware.auth import PATAuth

    if clash := [name for name in ENGINE_KEYS if name in raw]:
        raise _fail("AUTH", f"cannot be set together with {', '.join(clash)}")
    given = _object(raw, "AUTH")
    if isinstance(given, PATAuth):
        return lambda: given
    if not callable(given):
        kind = type(given).__name__
        raise _fail("AUTH", f"must be a PATAuth, a function returning one, or a dotted path, not {kind}")

    def call() -> PATAuth:
        auth = given()
        if not isinstance(auth, PATAuth):
            raise _fail("AUTH", f"returned a {type(auth).__name__}, not a PATAuth")
        return auth

    return call


def load(raw: object) -> PATSettings:
    """Check a ``settings.PAT`` value; ``ImproperlyConfigured`` naming the key otherwise."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(f"settings.PAT must be a dict, not {type(raw).__name__}")
    if unknown := sorted(str(k) for k in raw if k not in KEYS):
        raise ImproperlyConfigured(f"settings.PAT: unknown key {', '.join(unknown)}; the keys are {', '.join(KEYS)}")
    engine: dict[str, Any] = {}
    if "AUTH" in raw:
        auth = _given_auth(raw)
    else:
        engine = _engine(raw)
        if not engine["store_url"] and not settings.USE_TZ:
            raise ImproperlyConfigured("pat_middleware.django needs USE_TZ = True to store tokens in the database")
        auth = lambda: _build(engine)  # noqa: E731 - built on first use (no I/O at start-up)
    exempt = raw.get("EXEMPT", ())
    _checked("EXEMPT", lambda: ExemptPaths(exempt))
    scopes = raw.get("AVAILABLE_SCOPES")
    if scopes is not None:
        _checked("AVAILABLE_SCOPES", lambda: requirement(list(scopes), False))
    manage = _text(raw, "MANAGE_SCOPE", MANAGE_SCOPE) or MANAGE_SCOPE
    _checked("MANAGE_SCOPE", lambda: requirement([manage], False))
    resolver = _object(raw, "USER_RESOLVER")
    if resolver is not None and not callable(resolver):
        raise _fail("USER_RESOLVER", f"must be a callable or its dotted path, not {type(resolver).__name__}")
    return PATSettings(
        auth=auth,
        required=_flag(raw, "REQUIRED"),
        exempt=(exempt,) if isinstance(exempt, str) else tuple(exempt),
        allow_query_token=_flag(raw, "ALLOW_QUERY_TOKEN"),
        expiry_header=_checked("EXPIRY_HEADER", lambda: expiry_header_name(_text(raw, "EXPIRY_HEADER", EXPIRY_HEADER))),
        user_resolver=resolver,
        manage_scope=manage,
        available_scopes=scopes,
        login_url=_text(raw, "LOGIN_URL"),
        engine=engine,
    )


class _State:
    """The checked settings and the engine, built once per process (again after a change)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.settings: PATSettings | None = None
        self.auth: PATAuth | None = None
        self.owned = False


_state = _State()


def get_settings() -> PATSettings:
    """``settings.PAT``, checked (cached until the setting changes)."""
    current = _state.settings
    if current is None:
        with _state.lock:
            if _state.settings is None:
                _state.settings = load(getattr(settings, "PAT", None))
            current = _state.settings
    return current


def get_auth() -> PATAuth:
    """The configured :class:`~pat_middleware.auth.PATAuth` (built on first use, no I/O)."""
    auth = _state.auth
    if auth is None:
        conf = get_settings()
        with _state.lock:
            if _state.auth is None:
                _state.auth = conf.auth()
                _state.owned = bool(conf.engine)
            auth = _state.auth
    return auth


def flush_log() -> None:
    """Write what the engine's security log holds now (``manage.py pat`` before the process
    exits: the writer thread would not); nothing when no engine was built yet."""
    auth = _state.auth
    if auth is not None and auth.security_log is not None:
        auth.security_log.flush(force=True)


def check_settings() -> None:
    """Check ``settings.PAT`` now (the app's ``ready``): a bad value stops start-up."""
    reset()
    get_settings()


def reset() -> None:
    """Forget the settings and close the engine this module built (``AUTH`` ones are the app's)."""
    with _state.lock:
        auth, owned = _state.auth, _state.owned
        _state.settings, _state.auth, _state.owned = None, None, False
    if auth is not None and owned:
        auth.close()


def on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    """``setting_changed`` receiver: ``override_settings(PAT=...)`` takes effect."""
    if setting in ("PAT", "DATABASES", "USE_TZ"):
        reset()
