"""Which token a request presents: the ``Authorization: Bearer`` grammar of RFC 6750
and the ``access_token`` query parameter (§2.3). No I/O."""

from __future__ import annotations

import re
from collections.abc import Sequence

from pat_middleware.errors import InvalidRequest

__all__ = ["B64TOKEN", "bearer_token", "request_token"]

# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


#: Bearer credentials after a comma, or an empty Bearer before one: two Authorization
#: headers joined into one value (searched with quoted-strings blanked out).
_JOINED_BEARER = re.compile(r",[ \t]*bearer(?:[ \t]|$)|^[ \t]*bearer[ \t]*,", re.IGNORECASE)
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


def _joined(value: str) -> bool:
    """True if ``value`` holds Bearer credentials joined with others by a comma."""
    return "," in value and _JOINED_BEARER.search(_QUOTED.sub('""', value)) is not None


def bearer_token(authorization: Sequence[str]) -> str | None:
    """The bearer token in the ``Authorization`` header values, or ``None``.

    ``None`` means no bearer credentials (no header, or another scheme).
    Raises ``InvalidRequest`` for two or more headers, a missing token,
    extra parameters or characters outside RFC 6750's b64token.
    """
    if not authorization:
        return None
    if len(authorization) > 1 or _joined(authorization[0]):
        # WSGI servers join repeated headers with commas ("Basic x,Bearer t"),
        # which no single credential contains (b64token has no comma).
        raise InvalidRequest("Send exactly one Authorization header")
    scheme, _, rest = authorization[0].strip(" \t").partition(" ")
    if scheme.lower() != "bearer":
        if scheme[:6].lower() == "bearer" and scheme[6:7].isspace():  # "Bearer<TAB>token"
            raise InvalidRequest("Separate the scheme and the token with a space")
        return None
    token = rest.strip(" \t")
    if not token:
        raise InvalidRequest("The Bearer credentials carry no token")
    if not B64TOKEN.fullmatch(token):
        raise InvalidRequest("The Bearer token has characters RFC 6750 does not allow")
    return token


def request_token(
    authorization: Sequence[str], query_tokens: Sequence[str] = (), allow_query: bool = False
) -> str | None:
    """The one token a request presents, from its header or (if allowed) ``access_token``.

    A token in two places, or two ``access_token`` parameters, is ``InvalidRequest``.
    With ``allow_query`` off, ``access_token`` parameters are ignored (RFC 6750 §2.3).
    """
    header = bearer_token(authorization)
    if not allow_query or not query_tokens:
        return header
    if header is not None or len(query_tokens) > 1:
        raise InvalidRequest("Present the token in exactly one place")
    token = query_tokens[0]
    if not B64TOKEN.fullmatch(token):
        raise InvalidRequest("The access_token parameter is malformed")
    return token
