"""``PATAuth`` from ``PAT_*`` environment variables (twelve-factor style).

=========================  =============================================  ==================
variable                   meaning                                        default
=========================  =============================================  ==================
``PAT_STORE_URL``          the token store (``store_from_url``)           ``sqlite:///pat_tokens.db``
``PAT_CACHE_URL``          Redis shared cache + invalidation channel      none
                           (``redis://``, ``redis+sentinel://``,
                           ``redis+cluster://``; see ``redis_topology``)
``PAT_CACHE_PREFIX``       Redis key and channel namespace                ``pat:``
``PAT_PREFIX``             token prefix                                   ``pat``
``PAT_REALM``              ``realm`` of the challenges                    ``api``
``PAT_LOCAL_TTL``          see ``PATAuth`` (seconds)                      5
``PAT_SUBSCRIBED_TTL``     see ``PATAuth`` (seconds)                      300
``PAT_SHARED_TTL``         see ``PATAuth`` (seconds)                      60
``PAT_TOMBSTONE_TTL``      see ``RedisCache`` (seconds)                   5
``PAT_REDIS_TIMEOUT``      Redis connect/reply timeout (seconds)          0.25
``PAT_HASH_WORKERS``       argon2 runs at once in the process             2
``PAT_REVOCATION_POLL``    seconds between polls of the store's change    5
                           feed (the revocation bound); ``off``: none
``PAT_HMAC_KEY``           hash secrets with ``HMACHasher`` under this    argon2id
                           key (its UTF-8 bytes, at least 16)
``PAT_HMAC_KEY_ID``        the key's id, stored in each hash              ``k1``
``PAT_HMAC_OLD_KEYS``      retired keys that still verify:                none
                           ``id:key,id:key`` (see key rotation in
                           docs/cli.md)
``PAT_REVOKE_UNUSED_AFTER`` refuse (``inactive``) and let ``pat sweep``    none
                           revoke tokens unused this long (``365d``)
``PAT_SECURITY_LOG``       keep the security log in the store             ``on``
                           (``on``/``off``)
``PAT_LOG_RETENTION``      how long log entries are kept (``90d``)        ``90d``
=========================  =============================================  ==================

Unset or empty variables take the default. A malformed value raises
``ValueError`` naming the variable, so a worker stops at start-up with one
clear line instead of failing at its first request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pat_middleware.core import defaults, limits
from pat_middleware.core.durations import parse_duration
from pat_middleware.core.limits import MAX_SECONDS
from pat_middleware.core.policy import Policy

if TYPE_CHECKING:
    from pat_middleware.core.hashing import HMACHasher

__all__ = [
    "DEFAULT_STORE_URL",
    "VARIABLES",
    "check_cache_prefix",
    "hasher_from_env",
    "oversight_settings",
    "settings_from_env",
]

DEFAULT_STORE_URL = defaults.STORE_URL

#: Every variable ``PATAuth.from_env`` reads.
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
    "PAT_REVOCATION_POLL",
    "PAT_HMAC_KEY",
    "PAT_HMAC_KEY_ID",
    "PAT_HMAC_OLD_KEYS",
    "PAT_REVOKE_UNUSED_AFTER",
    "PAT_SECURITY_LOG",
    "PAT_LOG_RETENTION",
)

#: Shortest ``PAT_HMAC_KEY`` (and old key) accepted, in bytes.
MIN_HMAC_KEY_BYTES = 16
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,32}")
_CACHE_PREFIX = re.compile(r"[!-~]{1,100}")

_DECIMAL = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"[0-9]+")


def _seconds(env: Mapping[str, str], name: str, low: float = 0.0, high: float = MAX_SECONDS) -> float | None:
    """``env[name]`` as seconds in ``[low, high]``; ``None`` when unset or empty."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not _DECIMAL.fullmatch(raw):
        raise ValueError(f"{name} must be a number of seconds (like 5 or 0.25), not {raw!r}")
    return limits.seconds(name, float(raw), low=low, high=high)


def _count(env: Mapping[str, str], name: str, high: int) -> int | None:
    """``env[name]`` as an integer in ``[1, high]``; ``None`` when unset or empty."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not _INTEGER.fullmatch(raw):
        raise ValueError(f"{name} must be a whole number, not {raw!r}")
    return limits.count(name, int(raw), high=high)


def oversight_settings(config: Mapping[str, object]) -> dict[str, Any]:
    """The ``PATAuth`` settings of ``PAT_REVOKE_UNUSED_AFTER`` (a duration: ``365d``;
    sets ``Policy.revoke_unused_after``), ``PAT_SECURITY_LOG`` (``on``/``off``, or a
    bool in Flask config) and ``PAT_LOG_RETENTION`` (a duration, ``90d`` by default).
    Durations may also be ``timedelta`` values (Flask config). ``ValueError`` naming the key."""
    settings: dict[str, Any] = {}
    unused = _duration(config, "PAT_REVOKE_UNUSED_AFTER")
    if unused is not None:
        settings["policy"] = Policy(revoke_unused_after=limits.days("PAT_REVOKE_UNUSED_AFTER", unused))
    retention = _duration(config, "PAT_LOG_RETENTION")
    if retention is not None:
        settings["log_retention"] = limits.days("PAT_LOG_RETENTION", retention)
    flag = config.get("PAT_SECURITY_LOG")
    if isinstance(flag, bool):
        settings["security_log"] = flag
    elif isinstance(flag, str) and flag.strip():
        if flag.strip().lower() not in _SWITCH:
            raise ValueError(f"PAT_SECURITY_LOG must be on or off, not {flag!r}")
        settings["security_log"] = _SWITCH[flag.strip().lower()]
    elif flag is not None and not isinstance(flag, str):
        raise ValueError(f"PAT_SECURITY_LOG must be True or False, not {flag!r}")
    return settings


_SWITCH = {"on": True, "off": False, "true": True, "false": False, "1": True, "0": False}


def _duration(config: Mapping[str, object], name: str) -> timedelta | None:
    value = config.get(name)
    if value is None or isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a duration such as 365d, not {value!r}")
    if not value.strip():
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def hasher_from_env(env: Mapping[str, str]) -> HMACHasher | None:
    """The ``HMACHasher`` of ``PAT_HMAC_KEY`` / ``PAT_HMAC_KEY_ID`` / ``PAT_HMAC_OLD_KEYS``;
    None (argon2id, the default) when ``PAT_HMAC_KEY`` is unset."""
    from pat_middleware.core.hashing import HMACHasher

    key = env.get("PAT_HMAC_KEY", "").strip()
    key_id = env.get("PAT_HMAC_KEY_ID", "").strip()
    old = env.get("PAT_HMAC_OLD_KEYS", "").strip()
    if not key:
        if key_id or old:
            given = "PAT_HMAC_KEY_ID" if key_id else "PAT_HMAC_OLD_KEYS"
            raise ValueError(f"{given} is set but PAT_HMAC_KEY is not: set the current key too")
        return None
    _check_key("PAT_HMAC_KEY", key)
    key_id = key_id or "k1"
    _check_key_id("PAT_HMAC_KEY_ID", key_id)
    old_keys: dict[str, bytes | str] = {}
    for entry in filter(None, (part.strip() for part in old.split(","))):
        old_id, sep, old_key = entry.partition(":")
        old_id, old_key = old_id.strip(), old_key.strip()
        if not sep or not old_key:
            raise ValueError("PAT_HMAC_OLD_KEYS must be id:key pairs separated by commas (like k1:oldkey,k0:olderkey)")
        _check_key_id("PAT_HMAC_OLD_KEYS", old_id)
        _check_key(f"PAT_HMAC_OLD_KEYS (key {old_id})", old_key)
        if old_id == key_id or old_id in old_keys:
            raise ValueError(f"PAT_HMAC_OLD_KEYS: key id {old_id!r} is given twice (or is PAT_HMAC_KEY_ID)")
        old_keys[old_id] = old_key
    return HMACHasher(key, key_id, old_keys)


def _check_key(name: str, key: str) -> None:
    if len(key.encode()) < MIN_HMAC_KEY_BYTES:
        # Never echo the key itself.
        raise ValueError(f"{name} is too short: use at least {MIN_HMAC_KEY_BYTES} bytes (32 random bytes advised)")


def _check_key_id(name: str, key_id: str) -> None:
    if not _KEY_ID.fullmatch(key_id):
        raise ValueError(f"{name}: a key id is 1 to 32 of A-Z a-z 0-9 . _ -, not {key_id[:40]!r}")


def check_cache_prefix(prefix: str, name: str = "PAT_CACHE_PREFIX") -> str:
    """``prefix`` if it is a usable Redis namespace: 1 to 100 printable ASCII characters, no blank."""
    if not _CACHE_PREFIX.fullmatch(prefix):
        shown = prefix if len(prefix) <= 40 else prefix[:39] + "…"
        raise ValueError(
            f"{name} must be 1 to 100 printable ASCII characters without blanks (like pat:), not {shown!r}"
        )
    return prefix


def settings_from_env(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``PATAuth`` keyword settings and the ``RedisCache`` options the ``PAT_*``
    variables of ``env`` give, apart from the store and the cache URL (every value checked)."""
    settings: dict[str, Any] = {}
    for name, key in (("PAT_PREFIX", "prefix"), ("PAT_REALM", "realm")):
        if value := env.get(name, "").strip():
            settings[key] = value
    for name, key in (
        ("PAT_LOCAL_TTL", "local_ttl"),
        ("PAT_SUBSCRIBED_TTL", "subscribed_ttl"),
        ("PAT_SHARED_TTL", "shared_ttl"),
    ):
        if (ttl := _seconds(env, name)) is not None:
            settings[key] = ttl
    if (workers := _count(env, "PAT_HASH_WORKERS", high=256)) is not None:
        settings["hash_workers"] = workers
    if env.get("PAT_REVOCATION_POLL", "").strip().lower() == "off":
        settings["revocation_poll"] = None
    elif (poll := _seconds(env, "PAT_REVOCATION_POLL")) is not None:
        settings["revocation_poll"] = limits.poll_interval("PAT_REVOCATION_POLL", poll)
    if (hasher := hasher_from_env(env)) is not None:
        settings["hasher"] = hasher
    settings.update(oversight_settings(env))
    # Checked even without PAT_CACHE_URL: a typo should not wait for the day Redis is added.
    redis_options: dict[str, Any] = {
        "prefix": check_cache_prefix(env.get("PAT_CACHE_PREFIX", "").strip() or defaults.CACHE_PREFIX)
    }
    if (timeout := _seconds(env, "PAT_REDIS_TIMEOUT", low=0.01, high=60.0)) is not None:
        redis_options["socket_timeout"] = timeout
    if (tombstone := _seconds(env, "PAT_TOMBSTONE_TTL", high=3600.0)) is not None:
        redis_options["tombstone_ttl"] = tombstone
    return settings, redis_options
