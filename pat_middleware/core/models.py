"""Frozen value types: ``TokenRecord``, ``Principal``, ``NewToken``.

Timestamps are timezone-aware UTC ``datetime`` objects everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pat_middleware.core.resources import covers, wildcard_prefixes
from pat_middleware.core.scopes import satisfies
from pat_middleware.errors import AuthenticationRequired, InsufficientScope

__all__ = ["NewToken", "Principal", "TokenRecord", "TokenState", "from_timestamp", "require", "utc"]

#: ``rotated``: replaced by a rotation, still valid until its grace ends (``revoked_at``).
#: ``inactive``: not used for ``Policy.revoke_unused_after`` (refused; swept by ``pat sweep``).
TokenState = Literal["active", "rotated", "inactive", "expired", "revoked"]
_VALID = frozenset({"active", "rotated"})


def utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime; naive values are taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def from_timestamp(seconds: float) -> datetime:
    """An aware UTC datetime from epoch seconds."""
    return datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What the store keeps about one token. Never the plaintext, only ``hash``.

    ``revoked_at`` may lie in the future: a rotation with a grace period
    schedules the old token's revocation. ``family_id`` is shared by a token
    and every token rotated from it (the first token's id).
    """

    id: str
    user_id: str
    name: str
    hash: str = field(repr=False)
    scopes: tuple[str, ...] = ()
    description: str = ""
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    last_used_ips: tuple[str, ...] = ()
    revoked_at: datetime | None = None
    family_id: str = ""
    rotated_from: str | None = None
    allowed_cidrs: tuple[str, ...] = ()
    #: The resource ids the token is limited to (``None``: every resource; see
    #: :mod:`pat_middleware.core.resources`).
    resources: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.family_id:
            object.__setattr__(self, "family_id", self.id)

    @property
    def last_activity(self) -> datetime:
        """When the token was last used, or created when it never was (what the
        inactivity policy counts from)."""
        return self.last_used_at if self.last_used_at is not None else self.created_at

    def state(self, now: datetime, unused_after: timedelta | None = None) -> TokenState:
        """The token's state at ``now``: ``"revoked"`` (revoked wins), ``"expired"``,
        ``"inactive"`` (with ``unused_after``, ``Policy.revoke_unused_after``: not
        used for that long), ``"rotated"`` (replaced by a rotation, valid until
        its grace ends at ``revoked_at``) or ``"active"``."""
        if self.revoked_at is not None and self.revoked_at <= now:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        if unused_after is not None and self.last_activity <= now - unused_after:
            return "inactive"
        return "active" if self.revoked_at is None else "rotated"

    def is_active(self, now: datetime, unused_after: timedelta | None = None) -> bool:
        """True when the token can authenticate at ``now`` (``active``, or ``rotated`` in its grace)."""
        return self.state(now, unused_after) in _VALID

    def evolve(self, **changes: Any) -> TokenRecord:
        """A copy with ``changes`` applied."""
        return replace(self, **changes)

    def public_dict(self, now: datetime, unused_after: timedelta | None = None) -> dict[str, Any]:
        """JSON-ready fields for UIs and APIs: no hash, no secret."""

        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "id": self.id,
            "user_id": self.user_id,
            "name": self.name,
            "description": self.description,
            "scopes": list(self.scopes),
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "last_used_at": iso(self.last_used_at),
            "last_used_ips": list(self.last_used_ips),
            "revoked_at": iso(self.revoked_at),
            "family_id": self.family_id,
            "rotated_from": self.rotated_from,
            "allowed_cidrs": list(self.allowed_cidrs),
            "resources": list(self.resources) if self.resources is not None else None,
            "state": self.state(now, unused_after),
        }


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for. ``scopes`` are the effective scopes
    (implication rules already applied); ``resources`` the resource ids the
    token is limited to (``None``: every resource its user can reach)."""

    user_id: str
    token_id: str
    token_name: str
    scopes: frozenset[str]
    expires_at: datetime | None
    resources: frozenset[str] | None = None
    #: The prefixes of the wildcards among ``resources`` (derived, for the hot path).
    resource_prefixes: tuple[str, ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        if self.resources:
            object.__setattr__(self, "resource_prefixes", wildcard_prefixes(self.resources))

    def has_scopes(self, required: Iterable[str], any_of: bool = False) -> bool:
        """True when the token grants all (or, with ``any_of``, any) of ``required``."""
        return satisfies(self.scopes, required, any_of=any_of)

    def covers(self, resource: str) -> bool:
        """True when the token may act on ``resource`` (listed, under a listed
        wildcard, or the token is not limited to resources)."""
        return covers(self.resources, resource, self.resource_prefixes)

    def allows(self, scope: str, resource: str | None = None) -> bool:
        """The one rule every edge applies: the token grants ``scope`` and, when
        the request is about a ``resource``, may act on it. ``resource=None``
        checks the scope only (a route about no particular resource)."""
        return satisfies(self.scopes, (scope,)) and (resource is None or self.covers(resource))


@dataclass(frozen=True, slots=True)
class NewToken:
    """A freshly minted token: ``token`` is the plaintext, shown once."""

    token: str = field(repr=False)
    record: TokenRecord

    def __str__(self) -> str:
        return f"NewToken(id={self.record.id!r}, name={self.record.name!r})"


def require(
    principal: Principal | None, scopes: Sequence[str], any_of: bool = False, resource: str | None = None
) -> Principal:
    """The principal if it holds ``scopes`` (and, with ``resource``, may act on it);
    ``AuthenticationRequired`` or ``InsufficientScope`` otherwise. A refusal for the
    resource says so without naming it."""
    if principal is None:
        raise AuthenticationRequired()
    if not principal.has_scopes(scopes, any_of=any_of):
        raise InsufficientScope(scopes, any_of=any_of)
    if resource is not None and not principal.covers(resource):
        raise InsufficientScope(scopes, any_of=any_of, description=InsufficientScope.RESOURCE)
    return principal
