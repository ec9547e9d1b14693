"""What the administration API accepts, declared once: its operations, query shapes and bodies.

Like :mod:`pat_middleware.management.bodies` for the self-service API: the
shapes (:mod:`pat_middleware.management.shapes`) validate the requests of
:mod:`pat_middleware.management.admin_api` and write their part of the admin
OpenAPI document (:func:`~pat_middleware.management.admin_openapi.admin_openapi_document`).
The filter's names are :class:`~pat_middleware.core.oversight.TokenFilter`'s, read
by ``TokenFilter.from_params`` (the CLI reads them the same way).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final, cast

from pat_middleware.core.oversight import MAX_NAME_FILTER, TokenFilter
from pat_middleware.core.policy import MAX_USER_ID_LENGTH, Policy
from pat_middleware.core.query import SORTS, STATE_FILTERS, SortKey
from pat_middleware.management.bodies import CURSOR, LIMIT, MOMENT, SCOPE_SCHEMA, LogParams
from pat_middleware.management.shapes import ApiError, bad_request, json_schema, rule, slots

__all__ = [
    "ADMIN_OPERATIONS",
    "AdminLogParams",
    "FilterParams",
    "RevokeMatchingArgs",
    "SearchParams",
    "SweepArgs",
    "token_filter",
]

#: The admin API's operations, in OpenAPI order: (method, path template, operationId).
ADMIN_OPERATIONS: Final = (
    ("GET", "/tokens", "searchTokens"),
    ("POST", "/tokens/revoke", "revokeMatching"),
    ("GET", "/tokens/{token_id}", "getAnyToken"),
    ("DELETE", "/tokens/{token_id}", "revokeAnyToken"),
    ("POST", "/sweep", "sweepInactive"),
    ("GET", "/log", "readSecurityLog"),
)

_DURATION = rule(
    doc="A duration: 90d, 12h, 15m, 90s, 2w or combinations (1d12h).",
    schema=lambda p: {"pattern": "^(?:[0-9]+[wdhms])+$", "maxLength": 40},
)


def _user_id_schema(policy: Policy) -> dict[str, Any]:
    return {"minLength": 1, "maxLength": MAX_USER_ID_LENGTH}


_USER_ID = rule(doc="Only this user's tokens.", schema=_user_id_schema)


@dataclass(frozen=True, slots=True)
class FilterParams:
    """Which tokens, across users: :class:`~pat_middleware.core.oversight.TokenFilter` as text."""

    state: str | None = field(
        default=None, metadata=rule(doc="Default all.", schema=lambda p: {"enum": list(STATE_FILTERS)})
    )
    user_id: str | None = field(default=None, metadata=_USER_ID)
    scope: str | None = field(
        default=None,
        metadata=rule(
            doc="Tokens that could act with this scope (held, by a wildcard or implied).", schema=lambda p: SCOPE_SCHEMA
        ),
    )
    name_contains: str | None = field(
        default=None,
        metadata=rule(
            doc="Case-insensitive part of the name.", schema=lambda p: {"minLength": 1, "maxLength": MAX_NAME_FILTER}
        ),
    )
    created_after: str | None = field(default=None, metadata=MOMENT)
    created_before: str | None = field(default=None, metadata=MOMENT)
    last_used_after: str | None = field(default=None, metadata=MOMENT)
    last_used_before: str | None = field(default=None, metadata=MOMENT)
    unused_for: str | None = field(default=None, metadata=_DURATION)
    expiring_within: str | None = field(default=None, metadata=_DURATION)

    def given(self) -> dict[str, str]:
        """The parameters sent."""
        return {slot.name: getattr(self, slot.name) for slot in slots(FilterParams) if getattr(self, slot.name)}


_FILTER_NAMES = tuple(slot.name for slot in slots(FilterParams))
assert set(_FILTER_NAMES) == {f.name for f in fields(TokenFilter)}, "FilterParams must mirror TokenFilter"


def token_filter(params: Mapping[str, str], prefix: str = "") -> TokenFilter:
    """``TokenFilter.from_params(params)``, every fault a 400 naming ``prefix + name``."""
    try:
        return TokenFilter.from_params(params)
    except ValueError as exc:  # PolicyViolation is one
        raise bad_request(prefix + (getattr(exc, "field", None) or "filter"), str(exc)) from None


@dataclass(frozen=True, slots=True)
class SearchParams(FilterParams):
    """The query of ``GET /tokens``: the filter, the order and the page."""

    sort: str = field(
        default="-created_at",
        metadata=rule(
            doc="created_at or last_used_at (last activity); - for newest first.",
            schema=lambda p: {"enum": list(SORTS)},
        ),
    )
    cursor: str | None = field(default=None, metadata=CURSOR)
    limit: int = field(default=100, metadata=LIMIT)

    @property
    def sort_key(self) -> SortKey:
        """``sort`` as a sort key (checked by ``parse_query`` against its enum)."""
        if self.sort not in SORTS:
            raise bad_request("sort", f"sort must be one of {', '.join(SORTS)}")
        return cast(SortKey, self.sort)


@dataclass(frozen=True, slots=True)
class AdminLogParams(LogParams):
    """The query of the admin ``GET /log``: :class:`LogParams` and any user's entries."""

    user_id: str | None = field(default=None, metadata=rule(doc="Only this user's entries.", schema=_user_id_schema))


def _filter_schema(policy: Policy) -> dict[str, Any]:
    schema = json_schema(FilterParams, policy)
    return {**schema, "minProperties": 1}


@dataclass(frozen=True, slots=True)
class RevokeMatchingArgs:
    """A ``POST /tokens/revoke`` body: revoke every live token matching ``filter``."""

    filter: dict[str, str] = field(
        metadata=rule(
            doc="At least one criterion; the names and values of GET /tokens's query.",
            high=len(_FILTER_NAMES),
            schema=_filter_schema,
        ),
    )
    dry_run: bool = field(default=False, metadata=rule(doc="Only report what would be revoked."))

    def selection(self) -> TokenFilter:
        """The filter as a :class:`TokenFilter`; a 400 naming ``filter`` (or ``filter.<name>``)."""
        if not self.filter:
            raise bad_request("filter", "give at least one filter: revoking every token is not a filter")
        return token_filter(self.filter, "filter.")


@dataclass(frozen=True, slots=True)
class SweepArgs:
    """A ``POST /sweep`` body (optional)."""

    dry_run: bool = field(default=False, metadata=rule(doc="Only list the inactive tokens."))


def no_sweep_policy() -> ApiError:
    """The 400 for a sweep without ``Policy(revoke_unused_after=...)``."""
    return bad_request("revoke_unused_after", "no inactivity policy: set Policy(revoke_unused_after=...)")
