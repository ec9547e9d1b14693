"""What the token management API accepts, declared once: its operations and its request shapes.

The API bodies (:class:`CreateArgs`, :class:`UpdateArgs`, :class:`RotateArgs`),
its query (:class:`LogParams`) and the settings page's forms (:class:`PageForm`, :class:`CreateForm`,
:class:`RenameForm`, :class:`TokenForm`) are shapes (:mod:`pat_middleware.management.shapes`):
:func:`~pat_middleware.management.shapes.parse` validates a JSON body against one,
:func:`~pat_middleware.management.shapes.parse_form` reads a form into one and
:func:`~pat_middleware.management.shapes.json_schema` writes its part of the OpenAPI
document (:mod:`pat_middleware.management.openapi`). The API (:mod:`pat_middleware.management.api`)
and the page (:mod:`pat_middleware.management.settings_page`) run them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from pat_middleware.core.audit import LOGGED_KINDS, LogPage
from pat_middleware.core.durations import parse_moment
from pat_middleware.core.flow import Flow
from pat_middleware.core.manager import ManagerFlows
from pat_middleware.core.models import NewToken, Principal, TokenRecord
from pat_middleware.core.policy import MAX_GRACE, Policy
from pat_middleware.core.query import MAX_PAGE, StateFilter
from pat_middleware.core.resources import MAX_RESOURCE_LENGTH, MAX_RESOURCES, normalize_resources, within
from pat_middleware.core.scopes import MAX_SCOPE_LENGTH, ScopeRules, normalize_scopes, satisfies
from pat_middleware.core.tokens import KEY_ID_LENGTH, is_key_id
from pat_middleware.errors import InsufficientScope
from pat_middleware.management.shapes import UNSET, ApiError, Unset, bad_request, parse, rule

__all__ = [
    "CURSOR",
    "LIMIT",
    "MANAGE_SCOPE",
    "MAX_BODY",
    "MOMENT",
    "OPERATIONS",
    "RECORD_FIELDS",
    "SCOPE_SCHEMA",
    "TOKEN_ID_SCHEMA",
    "CreateArgs",
    "CreateForm",
    "LogParams",
    "PageForm",
    "RenameForm",
    "RotateArgs",
    "TokenForm",
    "UpdateArgs",
    "check_handing_out",
    "moment",
]

#: The scope a token needs to manage its user's tokens through the API (GitLab's ``self_rotate`` idea).
MANAGE_SCOPE = "tokens:manage"
#: Largest accepted request body.
MAX_BODY = 64 * 1024
#: Longest grace period a rotation may keep the old token alive.
MAX_DAYS = 100_000
MAX_SCOPES = 100
STATES: tuple[StateFilter, ...] = ("active", "rotated", "expired", "revoked", "inactive", "all")
#: The fields of a record in API answers (no hash, no secret, no user id).
RECORD_FIELDS = (
    "id",
    "name",
    "description",
    "scopes",
    "created_at",
    "expires_at",
    "last_used_at",
    "last_used_ips",
    "revoked_at",
    "rotated_from",
    "allowed_cidrs",
    "resources",
    "state",
)
#: The API's operations, in OpenAPI order: (method, path template, operationId).
OPERATIONS: Final = (
    ("GET", "/tokens", "listTokens"),
    ("POST", "/tokens", "createToken"),
    ("GET", "/tokens/{token_id}", "getToken"),
    ("PATCH", "/tokens/{token_id}", "updateToken"),
    ("DELETE", "/tokens/{token_id}", "revokeToken"),
    ("POST", "/tokens/{token_id}/rotate", "rotateToken"),
    ("GET", "/log", "readLog"),
)

# -- the policy-dependent parts of the fields' JSON Schema ------------------------------
# RFC 6749 scope-token: printable ASCII but space, '"' and '\'.
SCOPE_SCHEMA: Final = {"type": "string", "pattern": rf"^[\x21\x23-\x5B\x5D-\x7E]{{1,{MAX_SCOPE_LENGTH}}}$"}
# Not blank, no C0/C1 control characters, surrogates or private-use characters (the policy
# refuses every Unicode "C" category character).
_NO_CONTROL = r"\x00-\x1f\x7f-\x9f\ud800-\uf8ff\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff0-\uffff"
_NAME_PATTERN = rf"^[^{_NO_CONTROL}]*[^\s{_NO_CONTROL}][^{_NO_CONTROL}]*$"
# A resource id: printable ASCII but space; "*" only in a trailing "/*" or ":*" after a prefix.
RESOURCE_SCHEMA: Final = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_RESOURCE_LENGTH,
    "pattern": r"^[\x21-\x29\x2B-\x7E]+(?:[/:]\*)?$",
}
#: At most one way to give the expiry (object-level keywords of the create and update schemas).
ONE_EXPIRY: Final = {
    "not": {
        "anyOf": [
            {"required": ["expires_at", "expires_in_days"]},
            {"required": ["expires_at", "never_expires"], "properties": {"never_expires": {"const": True}}},
            {"required": ["expires_in_days", "never_expires"], "properties": {"never_expires": {"const": True}}},
        ]
    }
}


def _longest(policy: Policy) -> int:
    return policy.max_lifetime.days if policy.max_lifetime is not None else MAX_DAYS


def _expires_at_schema(policy: Policy) -> dict[str, Any]:
    return {"description": f"RFC 3339 date-time with an offset, at most {_longest(policy)} days away."}


def _never_expires_schema(policy: Policy) -> dict[str, Any]:
    return {} if not policy.require_expiry and policy.max_lifetime is None else {"const": False}


# The fields' rules (dataclass field metadata), each written once.
_NAME = rule(
    doc="Unique among your live tokens; no control characters.",
    schema=lambda p: {"minLength": 1, "maxLength": p.max_name_length, "pattern": _NAME_PATTERN},
)
_DESCRIPTION = rule(schema=lambda p: {"maxLength": p.max_description_length})
_SCOPES = rule(high=MAX_SCOPES, schema=lambda p: {"items": SCOPE_SCHEMA})
_EXPIRES_AT = rule(schema=_expires_at_schema)
_EXPIRES_IN_DAYS = rule(low=1, high=MAX_DAYS, schema=lambda p: {"maximum": _longest(p)})
_NEVER_EXPIRES = rule(schema=_never_expires_schema)
_ALLOWED_CIDRS = rule(
    high=MAX_SCOPES, doc="Networks the token may be used from.", schema=lambda p: {"maxItems": p.max_cidrs}
)
_RESOURCES = rule(
    high=MAX_RESOURCES,
    nullable=True,
    doc="The resource ids the token is limited to (a trailing /* or :* is a prefix wildcard); null: every resource.",
    schema=lambda p: {"items": RESOURCE_SCHEMA, "minItems": 1},
)
_GRACE_SECONDS = rule(low=0, high=int(MAX_GRACE.total_seconds()), doc="Keep the old token valid this long.")


def _expiry_kwargs(at: datetime | None, days: int | None, never: bool) -> dict[str, Any]:
    """The expiry fields as ``ManagerFlows`` keyword arguments."""
    return {"expires_in": timedelta(days=days) if days is not None else None, "expires_at": at, "never_expires": never}


# -- who may hand out what ------------------------------------------------------------------
def check_handing_out(
    caller: Principal | None,
    scopes: Iterable[str],
    rules: ScopeRules,
    resources: Iterable[str] | Unset | None = UNSET,
) -> None:
    """A token gives out only what it holds: a request carrying a token (``caller``)
    may create, rotate or change only tokens whose (expanded) scopes that token
    has, and (``resources``, when given) for resources it covers: a token limited
    to resources cannot hand out one for every resource, nor for others. Else 403
    ``insufficient_scope`` naming the missing scopes (the resources are not
    named). Sessions are not limited (the host app's login stands for the user,
    as on GitHub's settings page); revoking is never limited (it only takes
    power away)."""
    if caller is None:
        return
    try:
        wanted = rules.expand(normalize_scopes(scopes))
        wanted_resources = None if isinstance(resources, Unset) else normalize_resources(resources)
    except (TypeError, ValueError):
        return  # malformed: the policy refuses it with a 422 before anything is written
    missing = sorted(s for s in wanted if not satisfies(caller.scopes, [s]))
    if missing:
        raise InsufficientScope(missing)
    if not isinstance(resources, Unset) and not within(caller.resources, wanted_resources):
        raise InsufficientScope((), description=InsufficientScope.HANDING_OUT_RESOURCES)


def _check_existing(
    flows: ManagerFlows,
    caller: Principal | None,
    token_id: str,
    user_id: str,
    resources: Iterable[str] | Unset | None = UNSET,
) -> Flow[None]:
    """:func:`check_handing_out` for an existing token (rotate, update): its scopes and
    resources, and the ``resources`` an update gives it."""
    if caller is not None:
        record = yield from flows.get(token_id, user_id)
        rules = flows.verifier.scope_rules
        check_handing_out(caller, record.scopes, rules, record.resources)
        check_handing_out(caller, (), rules, resources)


# -- the API's bodies -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CreateArgs:
    """A ``POST /tokens`` body (its shape; the policy checks the content)."""

    name: str = field(metadata=_NAME)  # required
    description: str = field(default="", metadata=_DESCRIPTION)
    scopes: tuple[str, ...] = field(default=(), metadata=_SCOPES)
    expires_at: datetime | None = field(default=None, metadata=_EXPIRES_AT)
    expires_in_days: int | None = field(default=None, metadata=_EXPIRES_IN_DAYS)
    never_expires: bool = field(default=False, metadata=_NEVER_EXPIRES)
    allowed_cidrs: tuple[str, ...] = field(default=(), metadata=_ALLOWED_CIDRS)
    resources: tuple[str, ...] | None = field(default=None, metadata=_RESOURCES)

    def run(self, flows: ManagerFlows, user_id: str, caller: Principal | None = None) -> Flow[NewToken]:
        """The ``create`` flow for ``user_id``; ``caller`` is the request's token, if any."""
        check_handing_out(caller, self.scopes, flows.verifier.scope_rules, self.resources)
        return flows.create(
            user_id,
            self.name,
            self.scopes,
            description=self.description,
            allowed_cidrs=self.allowed_cidrs,
            resources=self.resources,
            **_expiry_kwargs(self.expires_at, self.expires_in_days, self.never_expires),
        )


@dataclass(frozen=True, slots=True)
class UpdateArgs:
    """A ``PATCH /tokens/{id}`` body: only the fields sent change."""

    name: str | Unset = field(default=UNSET, metadata=_NAME)
    description: str | Unset = field(default=UNSET, metadata=_DESCRIPTION)
    expires_at: datetime | None = field(default=None, metadata=_EXPIRES_AT)
    expires_in_days: int | None = field(default=None, metadata=_EXPIRES_IN_DAYS)
    never_expires: bool = field(default=False, metadata=_NEVER_EXPIRES)
    allowed_cidrs: tuple[str, ...] | Unset = field(default=UNSET, metadata=_ALLOWED_CIDRS)
    resources: tuple[str, ...] | Unset | None = field(default=UNSET, metadata=_RESOURCES)

    def run(
        self, flows: ManagerFlows, token_id: str, user_id: str, caller: Principal | None = None
    ) -> Flow[TokenRecord]:
        """The ``update`` flow: every change is checked, then all are written at once."""
        yield from _check_existing(flows, caller, token_id, user_id, self.resources)
        changes: dict[str, Any] = {}
        if self.expires_at is not None or self.expires_in_days is not None or self.never_expires:
            changes = _expiry_kwargs(self.expires_at, self.expires_in_days, self.never_expires)
        for key in ("name", "description", "allowed_cidrs", "resources"):
            value = getattr(self, key)
            if value is not UNSET:
                changes[key] = value
        return (yield from flows.update(token_id, user_id=user_id, **changes))


@dataclass(frozen=True, slots=True)
class RotateArgs:
    """A ``POST /tokens/{id}/rotate`` body."""

    expires_in_days: int | None = field(default=None, metadata=_EXPIRES_IN_DAYS)
    grace_seconds: int | None = field(default=None, metadata=_GRACE_SECONDS)

    def run(self, flows: ManagerFlows, token_id: str, user_id: str, caller: Principal | None = None) -> Flow[NewToken]:
        """The ``rotate`` flow (the new secret gets the old token's scopes)."""
        yield from _check_existing(flows, caller, token_id, user_id)
        days, grace = self.expires_in_days, self.grace_seconds
        expires_in = timedelta(days=days) if days is not None else None
        return (
            yield from flows.rotate(
                token_id,
                user_id=user_id,
                expires_in=expires_in,
                grace=timedelta(seconds=grace) if grace is not None else None,
            )
        )


# -- reading the security log -----------------------------------------------------------
#: A token id (its key id) in a schema.
TOKEN_ID_SCHEMA: Final = {"type": "string", "pattern": f"^[0-9A-Za-z]{{{KEY_ID_LENGTH}}}$"}
#: How the API takes a moment: what ``core.durations.parse_moment`` reads.
MOMENT = rule(doc="ISO 8601 date or date-time (UTC when it has no offset), e.g. 2026-05-01T12:00:00Z.")
CURSOR = rule(doc="The `next_cursor` of the previous page.", schema=lambda p: {"minLength": 1, "maxLength": 200})
LIMIT = rule(low=1, high=MAX_PAGE, doc="At most this many per page (default 100).")
_LOG_TOKEN_ID = rule(doc="Only this token's entries.", schema=lambda p: TOKEN_ID_SCHEMA)
_KINDS = rule(
    high=len(LOGGED_KINDS),
    doc="Only entries of these kinds (repeat the parameter for several).",
    schema=lambda p: {"items": {"type": "string", "enum": sorted(LOGGED_KINDS)}},
)


def moment(text: str | None, name: str) -> datetime | None:
    """A query parameter's moment in UTC (``parse_moment``), or a 400 naming ``name``."""
    if text is None:
        return None
    try:
        return parse_moment(text)
    except ValueError as exc:
        message = str(exc) if isinstance(exc, ValueError) else f"{name} is out of range"
        raise bad_request(name, message) from None


@dataclass(frozen=True, slots=True)
class LogParams:
    """The query of ``GET /log``: one page of the security log, newest first."""

    token_id: str | None = field(default=None, metadata=_LOG_TOKEN_ID)
    kind: tuple[str, ...] = field(default=(), metadata=_KINDS)
    since: str | None = field(default=None, metadata=MOMENT)
    until: str | None = field(default=None, metadata=MOMENT)
    cursor: str | None = field(default=None, metadata=CURSOR)
    limit: int = field(default=100, metadata=LIMIT)

    def run(self, flows: ManagerFlows, user_id: str | None) -> Flow[LogPage]:
        """The ``security_log`` flow (``user_id``: that owner's entries only)."""
        if self.token_id is not None and not is_key_id(self.token_id):
            raise bad_request("token_id", "token_id is not a token id")
        return flows.security_log(
            user_id=user_id,
            token_id=self.token_id,
            kinds=self.kind or None,
            since=moment(self.since, "since"),
            until=moment(self.until, "until"),
            cursor=self.cursor,
            limit=self.limit,
        )


# -- the settings page's forms ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PageForm:
    """What every form of the settings page posts."""

    csrf_token: str = ""
    action: str = ""  # create, rename, rotate, revoke


@dataclass(frozen=True, slots=True)
class CreateForm:
    """The create form; :meth:`args` turns it into the API's :class:`CreateArgs`."""

    name: str = ""
    description: str = ""
    scope: tuple[str, ...] = ()  # the checkboxes
    scopes: str = ""  # the free-text field (separated by spaces)
    expiration: str = "30"  # days, "custom" (then expires_on) or "never"
    expires_on: str = ""  # YYYY-MM-DD
    resource_access: str = "all"  # "all" or "selected"
    resource: tuple[str, ...] = ()  # the picker's checkboxes
    resources: str = ""  # the free-text field (separated by spaces)

    def args(self) -> CreateArgs:
        """The form as a create request, checked like an API body."""
        data: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "scopes": [*self.scope, *self.scopes.split()],
        }
        if self.resource_access == "selected":
            data["resources"] = list(dict.fromkeys([*self.resource, *self.resources.split()]))
            if not data["resources"]:
                raise ApiError(422, "validation_error", "Pick at least one resource, or All resources.", "resources")
        if self.expiration == "never":
            data["never_expires"] = True
        elif self.expiration == "custom":
            if not self.expires_on:
                raise ApiError(422, "validation_error", "Pick an expiry date.", "expires_at")
            data["expires_at"] = f"{self.expires_on}T23:59:59Z"
        else:
            days = self.expiration
            data["expires_in_days"] = int(days) if days.isascii() and days.isdigit() and len(days) < 7 else days
        return parse(CreateArgs, data)


@dataclass(frozen=True, slots=True)
class RenameForm:
    """A row's rename form; :meth:`args` is the API's :class:`UpdateArgs`."""

    token_id: str = ""
    name: str = ""

    def args(self) -> UpdateArgs:
        return parse(UpdateArgs, {"name": self.name})


@dataclass(frozen=True, slots=True)
class TokenForm:
    """A row's rotate or revoke form."""

    token_id: str = ""
