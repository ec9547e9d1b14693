"""What every framework edge shares: which token a request presents, which paths
are exempt, and the token-expiry response header. No I/O, no framework.

The ASGI edge (:mod:`pat_middleware.asgi`) and the WSGI edge use
:class:`RequestRules` so both decide the same way:

* the token comes from the ``Authorization`` header, or from ``access_token``
  query parameters when they are allowed (:func:`~pat_middleware.core.request_token`);
* a request without credentials passes as anonymous, unless ``required`` is on
  and its path is not exempt: then it gets a bare ``Bearer`` challenge (401);
* a request *with* credentials is always verified, exempt path or not.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from urllib.parse import parse_qsl

from pat_middleware import limits
from pat_middleware.bearer import request_token
from pat_middleware.errors import AuthenticationRequired
from pat_middleware.models import utc

__all__ = ["EXPIRY_HEADER", "ExemptPaths", "RequestRules", "expiry_header_name", "expiry_value", "query_tokens"]

#: Response header naming the expiry of the token that authenticated the request
#: (GitHub sends ``GitHub-Authentication-Token-Expiration``).
EXPIRY_HEADER = "PAT-Token-Expiration"


def expiry_header_name(value: str | None) -> str | None:
    """The edges' ``expiry_header`` option: ``None`` (or empty) for none, else a
    valid header name (``ValueError`` otherwise: no newlines, no colons)."""
    return limits.header_name("expiry_header", value) if value else None


def expiry_value(expires_at: datetime) -> str:
    """The expiry header's value, GitHub's format: ``2026-12-31 23:59:59 UTC``."""
    return utc(expires_at).strftime("%Y-%m-%d %H:%M:%S UTC")


def query_tokens(query_string: str) -> list[str]:
    """Every ``access_token`` value in a raw query string (percent-decoded)."""
    if "access_token" not in query_string and "%" not in query_string:  # "access%5Ftoken" decodes to it too
        return []
    return [v for k, v in parse_qsl(query_string, keep_blank_values=True) if k == "access_token"]


class ExemptPaths:
    """Path prefixes that need no token even when tokens are required.

    A prefix matches itself and everything below it on a ``/`` boundary:
    ``"/health"`` exempts ``/health`` and ``/health/db`` but not ``/healthz``.
    A trailing slash is ignored (``"/static/"`` is ``"/static"``) and ``"/"``
    exempts every path. Paths are compared as the application routes them
    (percent-decoded, relative to the mount point), case-sensitively.
    """

    __slots__ = ("_everything", "_prefixes")

    def __init__(self, prefixes: Iterable[str] | str = ()) -> None:
        if isinstance(prefixes, str):
            prefixes = [prefixes]
        if not isinstance(prefixes, Iterable):
            raise TypeError(f"exempt must be a path or a list of paths, not {type(prefixes).__name__}")
        cleaned: list[str] = []
        for prefix in prefixes:
            if not isinstance(prefix, str) or not prefix.startswith("/"):
                raise ValueError(f"an exempt path must be a string starting with '/', got {prefix!r}")
            cleaned.append(prefix.rstrip("/"))
        self._everything = "" in cleaned
        self._prefixes = tuple(dict.fromkeys(cleaned))

    def __contains__(self, path: str) -> bool:
        if self._everything:
            return True
        for prefix in self._prefixes:  # noqa: SIM110 - a plain loop is faster than any() here
            if path == prefix or (path.startswith(prefix) and path[len(prefix)] == "/"):
                return True
        return False

    def __bool__(self) -> bool:
        return bool(self._prefixes)

    def __repr__(self) -> str:
        return f"ExemptPaths({[p or '/' for p in self._prefixes]!r})"


class RequestRules:
    """The edge options ``required``, ``exempt`` and ``allow_query_token`` as one decision."""

    __slots__ = ("allow_query", "exempt", "required")

    def __init__(
        self, *, required: bool = False, exempt: Iterable[str] | str = (), allow_query_token: bool = False
    ) -> None:
        self.required = bool(required)
        self.exempt = ExemptPaths(exempt)
        self.allow_query = bool(allow_query_token)

    def token(self, authorization: Sequence[str], query_string: str = "") -> str | None:
        """The token to verify, or ``None`` without credentials.

        Raises ``InvalidRequest`` (400) for malformed or duplicated credentials.
        ``query_string`` is read only when query tokens are allowed.
        """
        if self.allow_query and query_string:
            return request_token(authorization, query_tokens(query_string), True)
        return request_token(authorization)

    def check_anonymous(self, path: str) -> None:
        """Raise ``AuthenticationRequired`` (401) if ``path`` may not be used without a token."""
        if self.required and path not in self.exempt:
            raise AuthenticationRequired()
