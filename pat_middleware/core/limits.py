"""Checks for settings, run once at start-up so a bad value fails there, in one
clear line naming the setting, never later inside a request.

Used by :class:`~pat_middleware.auth.PATAuth`, the verifier, the Redis cache,
both edges and the ``PAT_*`` environment and Flask configuration.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

__all__ = ["MAX_SECONDS", "count", "days", "header_name", "poll_interval", "realm", "seconds"]

#: The longest duration any TTL, interval or timeout setting may have: one day.
MAX_SECONDS = 86_400.0

# RFC 9110 §5.6.2: token = 1*tchar
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A realm goes into a quoted-string (quotes and backslashes are escaped there): printable ASCII.
_REALM = re.compile(r"[ -~]+")


def seconds(name: str, value: object, *, low: float = 0.0, high: float = MAX_SECONDS) -> float:
    """``value`` as seconds in ``[low, high]`` (finite), else ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be between {low:g} and {high:g} seconds, not {value!r}")
    return float(value)


def poll_interval(name: str, value: object) -> float:
    """A polling interval (the revocation feed's): 0.01 s to one hour, else ``ValueError`` naming ``name``."""
    return seconds(name, value, low=0.01, high=3600.0)


def days(name: str, value: object, *, low: timedelta = timedelta(days=1)) -> timedelta:
    """``value`` as a ``timedelta`` of at least ``low`` (at most 100 years), else ``ValueError`` naming ``name``."""
    if not isinstance(value, timedelta) or not low <= value <= timedelta(days=36_525):
        raise ValueError(f"{name} must be a timedelta between {low.days} day(s) and 100 years, not {value!r}")
    return value


def count(name: str, value: object, *, low: int = 1, high: int = 1_000_000) -> int:
    """``value`` as an integer in ``[low, high]``, else ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer between {low} and {high}, not {value!r}")
    return value


def header_name(name: str, value: object) -> str:
    """An HTTP header field name (an RFC 9110 token), else ``ValueError``: a
    newline or colon here would let a setting write other headers."""
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise ValueError(f"{name} must be an HTTP header name (letters, digits, '-'...), not {value!r}")
    return value


def realm(value: object) -> str:
    """A challenge ``realm``: printable ASCII (a header value must be latin-1 and
    one line), else ``ValueError``."""
    if not isinstance(value, str) or not _REALM.fullmatch(value):
        raise ValueError(f"realm must be printable ASCII, not {value!r}")
    return value
