"""The exception tree. ``PATError`` is the one root.

HTTP-facing errors know their status, their RFC 6750 error code and how to
build their ``WWW-Authenticate`` challenge, so every framework edge answers
the same way. No message or ``repr`` ever contains a token.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

__all__ = [
    "AuthenticationRequired",
    "InsufficientScope",
    "InvalidRequest",
    "InvalidToken",
    "NameTaken",
    "PATError",
    "PolicyViolation",
    "StoreUnavailable",
    "TokenNotFound",
    "TokenRevoked",
    "error_response",
]

#: Reasons an :class:`InvalidToken` carries, for logs and events only.
INVALID_TOKEN_REASONS = frozenset(
    {"malformed", "unknown", "bad_secret", "expired", "revoked", "inactive", "ip_not_allowed", "throttled"}
)

#: What clients see. Unknown, wrong, expired and revoked tokens look alike.
GENERIC_TOKEN_DESCRIPTION = "The access token is invalid, expired or revoked"  # noqa: S105 - not a secret


def _quote(value: str) -> str:
    """Quote ``value`` as an RFC 9110 quoted-string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class PATError(Exception):
    """Root of every error this library raises."""

    #: HTTP status the error maps to when it reaches a framework edge.
    status_code: int = 500
    #: RFC 6750 error code (``None`` for a bare challenge).
    error: str | None = None

    def __init__(self, description: str = "") -> None:
        super().__init__(description)
        self.description = description

    def challenge(self, realm: str) -> str | None:
        """The ``WWW-Authenticate`` value for this error, or ``None``."""
        return None

    def headers(self, realm: str) -> list[tuple[str, str]]:
        """Response headers (``WWW-Authenticate``, ``Retry-After``...)."""
        value = self.challenge(realm)
        return [("WWW-Authenticate", value)] if value is not None else []

    def body(self) -> bytes:
        """JSON body ``{"error": ..., "error_description": ...}``."""
        payload = {"error": self.error or "unauthorized", "error_description": self.description}
        return json.dumps(payload).encode()


class _BearerError(PATError):
    """An error answered with a ``Bearer`` challenge."""

    def _params(self) -> list[tuple[str, str]]:
        params = [("error", self.error)] if self.error else []
        if self.description:
            params.append(("error_description", self.description))
        return params

    def challenge(self, realm: str) -> str:
        params = [("realm", realm), *self._params()]
        return "Bearer " + ", ".join(f"{k}={_quote(v)}" for k, v in params)


class AuthenticationRequired(_BearerError):
    """No credentials were presented where a token is required (401, bare challenge)."""

    status_code = 401

    def __init__(self, description: str = "Authentication with a bearer token is required") -> None:
        super().__init__(description)

    def _params(self) -> list[tuple[str, str]]:
        return []


class InvalidRequest(_BearerError, ValueError):
    """The request's credentials are malformed (400 ``invalid_request``)."""

    status_code = 400
    error = "invalid_request"


class InvalidToken(_BearerError):
    """The token is malformed, unknown, wrong, expired or revoked (401 ``invalid_token``).

    ``reason`` is one of :data:`INVALID_TOKEN_REASONS`; it is for logs and
    events. The client only sees :data:`GENERIC_TOKEN_DESCRIPTION`.
    """

    status_code = 401
    error = "invalid_token"

    def __init__(self, reason: str, token_id: str | None = None) -> None:
        if reason not in INVALID_TOKEN_REASONS:
            raise ValueError(f"unknown InvalidToken reason {reason!r}")
        super().__init__(GENERIC_TOKEN_DESCRIPTION)
        self.reason = reason
        self.token_id = token_id

    def __str__(self) -> str:
        suffix = f" (token id {self.token_id})" if self.token_id else ""
        return f"invalid token: {self.reason}{suffix}"

    def __repr__(self) -> str:
        return f"InvalidToken(reason={self.reason!r}, token_id={self.token_id!r})"


class InsufficientScope(_BearerError):
    """The token is valid but lacks the scopes a route needs (403)."""

    status_code = 403
    error = "insufficient_scope"
    #: The description when the scopes fit but the token is limited to other
    #: resources (the resource id is not echoed back).
    RESOURCE = "The token is not valid for this resource"
    #: The description when a token would hand out resources it is not limited to.
    HANDING_OUT_RESOURCES = "The token cannot give access to resources it is not limited to itself"

    def __init__(self, required: Iterable[str], any_of: bool = False, description: str | None = None) -> None:
        self.required = tuple(required)
        self.any_of = any_of
        which = "one of" if any_of else "all of"
        super().__init__(description or f"The token needs {which} these scopes: {' '.join(self.required)}")

    def _params(self) -> list[tuple[str, str]]:
        params = super()._params()
        return [*params, ("scope", " ".join(self.required))] if self.required else params


class StoreUnavailable(PATError):
    """The token store cannot be reached (503 with ``Retry-After``). Never a pass."""

    status_code = 503
    error = "temporarily_unavailable"

    def __init__(self, description: str = "The token store is unavailable", retry_after: int = 5):
        super().__init__(description)
        self.retry_after = retry_after

    def headers(self, realm: str) -> list[tuple[str, str]]:
        return [("Retry-After", str(self.retry_after))]


class TokenNotFound(PATError, LookupError):
    """No token with that id (for that user)."""

    status_code = 404
    error = "not_found"

    def __init__(self, token_id: str) -> None:
        # Echo only what looks like a key id: a pasted token must not reach logs or a terminal.
        looks_like_an_id = len(token_id) <= 12 and token_id.isalnum()
        super().__init__(f"no token with id {token_id!r}" if looks_like_an_id else "no token with the given id")
        self.token_id = token_id


class TokenRevoked(PATError):
    """The operation needs a live token and this one is revoked.

    ``family_revoked`` is true when the operation was a rotation of an already
    rotated or revoked token: reuse detection then revoked its whole family.
    """

    status_code = 409
    error = "token_revoked"

    def __init__(self, token_id: str, family_revoked: bool = False) -> None:
        detail = "; every token of its family was revoked" if family_revoked else ""
        super().__init__(f"token {token_id!r} is revoked{detail}")
        self.token_id = token_id
        self.family_revoked = family_revoked


class PolicyViolation(PATError, ValueError):
    """A request to issue or change a token breaks the policy or is invalid.

    ``field`` names the offending input (``"name"``, ``"scopes"``...).
    """

    status_code = 422
    error = "policy_violation"

    def __init__(self, description: str, field: str | None = None) -> None:
        super().__init__(description)
        self.field = field


class NameTaken(PolicyViolation):
    """The user already has a live token with that name."""

    status_code = 409
    error = "name_taken"

    def __init__(self, name: str) -> None:
        super().__init__(f"a token named {name!r} already exists", field="name")
        self.name = name


def error_response(exc: PATError, realm: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """``(status, headers, body)`` of the JSON answer to ``exc``: the same on every edge (docs/architecture.md)."""
    headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store"), *exc.headers(realm)]
    return exc.status_code, headers, exc.body()
