"""Issue-time policy: lifetimes, scopes, names, limits. Pure checks, no I/O."""

from __future__ import annotations

import ipaddress
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pat_middleware.core.models import utc
from pat_middleware.core.resources import Resources, normalize_resources, within
from pat_middleware.core.scopes import normalize_scopes, satisfies
from pat_middleware.errors import PolicyViolation

__all__ = ["MAX_GRACE", "MAX_USER_ID_LENGTH", "MIN_UNUSED_AFTER", "Policy", "check_user_id"]

#: The longest rotation grace period: the old secret keeps working at most this long.
MAX_GRACE = timedelta(days=7)
#: The shortest ``revoke_unused_after``: longer than any cache keeps an entry, so a
#: cached token is always one used within the period.
MIN_UNUSED_AFTER = timedelta(days=1)
#: The longest user id the library keeps.
MAX_USER_ID_LENGTH = 255


def check_user_id(user_id: object) -> str:
    """``user_id`` if it is one the stores keep faithfully and terminals print
    honestly: a non-blank string of at most 255 characters without control,
    format or unassigned characters or lone surrogates (Unicode category C, as
    for names, except the zero-width joiners writing needs); else ``PolicyViolation``.
    The host app owns user ids; this only refuses what no user id should be
    (PostgreSQL would refuse a NUL later, as an outage)."""
    if not isinstance(user_id, str) or not user_id.strip():
        raise PolicyViolation("user_id must not be empty or blank", "user_id")
    if len(user_id) > MAX_USER_ID_LENGTH:
        raise PolicyViolation(f"user_id may be at most {MAX_USER_ID_LENGTH} characters", "user_id")
    if _has_control(user_id):
        raise PolicyViolation("user_id must not contain control characters (or bytes that are not UTF-8)", "user_id")
    return user_id


AllowedScopes = Iterable[str] | Callable[[str], Iterable[str]] | None
#: ``user_id -> resource ids`` (wildcards allowed) the user may limit tokens to; ``None``: any.
AllowedResources = Callable[[str], Iterable[str] | None] | None


@dataclass(frozen=True)
class Policy:
    """What users may issue.

    * ``max_lifetime``: the longest allowed life (``None``: unlimited).
    * ``default_lifetime``: used when a request names no expiry.
    * ``require_expiry``: refuse tokens that never expire.
    * ``allowed_scopes``: scopes users may request; a collection, or a
      callable ``user_id -> scopes`` for per-user rules; ``None`` allows any
      valid scope. ``admin:*`` in the allowed set permits ``admin:org``.
    * ``max_tokens_per_user``: live (unrevoked, unexpired) tokens per user.
    * ``allowed_resources``: a callable ``user_id -> resource ids`` (or
      ``None``) saying which resources a user may limit a token to; ``acme/*``
      permits ``acme/web``. ``None`` (the default, or returned) allows any
      valid resource id. A token for every resource (``resources=None``) is
      always allowed: it acts with the user's own reach, as tokens did before.
    * ``revoke_unused_after``: a token not used for this long (counted from its
      last recorded use, or its creation when never used) is refused with the
      reason ``inactive`` and listed as ``inactive``; ``manager.sweep()``
      (``pat sweep``) revokes such tokens. ``None`` (the default): no limit.
      At least :data:`MIN_UNUSED_AFTER`. Last uses are recorded at most once
      per ``last_used_interval`` per token and address, so a token may be
      judged inactive up to that interval early.

    Names are always unique among a user's unrevoked tokens; the store
    enforces it atomically.
    """

    max_lifetime: timedelta | None = timedelta(days=366)
    default_lifetime: timedelta | None = timedelta(days=30)
    require_expiry: bool = True
    allowed_scopes: AllowedScopes = None
    max_tokens_per_user: int | None = 100
    max_name_length: int = 100
    max_description_length: int = 1000
    max_cidrs: int = 32
    max_grace: timedelta = MAX_GRACE
    allowed_resources: AllowedResources = None
    revoke_unused_after: timedelta | None = None

    def __post_init__(self) -> None:
        unused = self.revoke_unused_after
        if unused is not None and (not isinstance(unused, timedelta) or unused < MIN_UNUSED_AFTER):
            raise ValueError(f"revoke_unused_after must be a timedelta of at least {MIN_UNUSED_AFTER.days} day")

    def expiry(
        self,
        now: datetime,
        expires_in: timedelta | None = None,
        expires_at: datetime | None = None,
        never_expires: bool = False,
        issued_at: datetime | None = None,
    ) -> datetime | None:
        """The expiry a token gets, or ``PolicyViolation``.

        ``max_lifetime`` counts from ``issued_at`` (a token's ``created_at``
        when its expiry is changed; ``now`` for a new token), so repeated
        extensions cannot keep a token alive past it.
        """
        given = sum(x is not None for x in (expires_in, expires_at)) + bool(never_expires)
        if given > 1:
            raise PolicyViolation("give only one of expires_in, expires_at, never_expires", "expires_at")
        if never_expires or (given == 0 and self.default_lifetime is None):
            if self.require_expiry or self.max_lifetime is not None:
                raise PolicyViolation("tokens must have an expiry date", "expires_at")
            return None
        try:
            if expires_at is None:
                lifetime = expires_in if expires_in is not None else self.default_lifetime
                assert lifetime is not None
                expires_at = now + lifetime
            expires_at = utc(expires_at)
        except OverflowError:
            raise PolicyViolation("the expiry is out of range", "expires_at") from None
        if expires_at <= now:
            raise PolicyViolation("the expiry must be in the future", "expires_at")
        start = issued_at or now
        if self.max_lifetime is not None and expires_at - start > self.max_lifetime:
            days = self.max_lifetime.days
            limit = f"{days} days after its creation" if issued_at is not None else f"{days} days away"
            raise PolicyViolation(f"the expiry may be at most {limit}", "expires_at")
        return expires_at

    def name(self, name: object) -> str:
        """A valid token name (trimmed), or ``PolicyViolation``."""
        if not isinstance(name, str) or not name.strip():
            raise PolicyViolation("the name must be a non-empty string", "name")
        name = name.strip()
        if len(name) > self.max_name_length:
            raise PolicyViolation(f"the name may be at most {self.max_name_length} characters", "name")
        if _has_control(name):
            raise PolicyViolation("the name must not contain control characters", "name")
        return name

    def description(self, description: object) -> str:
        """A valid description, or ``PolicyViolation``."""
        if not isinstance(description, str):
            raise PolicyViolation("the description must be a string", "description")
        if len(description) > self.max_description_length:
            raise PolicyViolation(
                f"the description may be at most {self.max_description_length} characters", "description"
            )
        if any(_unstorable(c) for c in description):
            raise PolicyViolation(
                "the description must not contain control characters (other than tab and newline) "
                "or unpaired surrogates",
                "description",
            )
        return description

    def grace(self, grace: timedelta | None) -> timedelta:
        """A rotation grace period between zero and ``max_grace``, or ``PolicyViolation``."""
        if grace is None:
            return timedelta(0)
        if not isinstance(grace, timedelta) or not timedelta(0) <= grace <= self.max_grace:
            raise PolicyViolation(f"grace must be between 0 and {self.max_grace.total_seconds():g} seconds", "grace")
        return grace

    def scopes(self, user_id: str, scopes: Iterable[str] | str) -> tuple[str, ...]:
        """Validated, sorted scopes the user may have, or ``PolicyViolation``."""
        try:
            result = normalize_scopes(scopes)
        except (ValueError, TypeError) as exc:
            raise PolicyViolation(str(exc), "scopes") from None
        allowed = self.allowed_scopes
        if callable(allowed):
            allowed = allowed(user_id)
        if allowed is not None:
            permitted = frozenset(allowed)
            refused = [s for s in result if not satisfies(permitted, [s])]
            if refused:
                raise PolicyViolation(f"scopes not allowed: {' '.join(refused)}", "scopes")
        return result

    def resources(self, user_id: str, resources: Iterable[str] | None) -> Resources:
        """``None`` (every resource) or the validated, sorted resource ids the
        user may limit a token to, or ``PolicyViolation`` naming ``resources``."""
        try:
            result = normalize_resources(resources)
        except (ValueError, TypeError) as exc:
            raise PolicyViolation(str(exc), "resources") from None
        if result is None or self.allowed_resources is None:
            return result
        allowed = self.allowed_resources(user_id)
        if allowed is not None:
            permitted = tuple(allowed)
            refused = [r for r in result if not within(permitted, (r,))]
            if refused:
                raise PolicyViolation(f"resources not allowed: {' '.join(refused)}", "resources")
        return result

    def cidrs(self, cidrs: Iterable[str] | None) -> tuple[str, ...]:
        """Normalized CIDR blocks (``10.0.0.0/8``, ``2001:db8::/32``; an IPv4-mapped
        IPv6 block such as ``::ffff:10.0.0.0/104`` is stored as ``10.0.0.0/8``), or
        ``PolicyViolation``."""
        if cidrs is None:
            return ()
        if isinstance(cidrs, str):
            cidrs = [cidrs]
        try:
            result = tuple(dict.fromkeys(str(_unmapped(ipaddress.ip_network(c, strict=False))) for c in cidrs))
        except (ValueError, TypeError) as exc:
            raise PolicyViolation(f"invalid CIDR block: {exc}", "allowed_cidrs") from None
        if len(result) > self.max_cidrs:
            raise PolicyViolation(f"at most {self.max_cidrs} CIDR blocks", "allowed_cidrs")
        return result

    def room_for_another(self, live_tokens: int) -> None:
        """``PolicyViolation`` when a user already has the maximum of live tokens."""
        if self.max_tokens_per_user is not None and live_tokens >= self.max_tokens_per_user:
            raise PolicyViolation(
                f"at most {self.max_tokens_per_user} active tokens per user; revoke one first", "name"
            )


def _unstorable(char: str) -> bool:
    """A control character other than tab/newline/CR, or a lone surrogate: text no
    store keeps faithfully (PostgreSQL refuses NUL; UTF-8 cannot encode surrogates)."""
    category = unicodedata.category(char)
    return category == "Cs" or (category == "Cc" and char not in "\t\n\r")


#: Format characters that writing needs: ZERO WIDTH NON-JOINER (Persian and other
#: scripts) and ZERO WIDTH JOINER (emoji sequences such as 👩‍💻).
_JOINERS = frozenset("\u200c\u200d")


def _has_control(text: str) -> bool:
    """A character of Unicode category C: control, format (bidi overrides, zero width
    space...; the two joiners excepted), private use, unassigned, or a lone surrogate
    (what a non-UTF-8 command-line argument becomes)."""
    return any(unicodedata.category(char).startswith("C") and char not in _JOINERS for char in text)


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _unmapped(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An IPv4-mapped IPv6 block as the IPv4 block it stands for; any other unchanged."""
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None
        return ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
    return network
