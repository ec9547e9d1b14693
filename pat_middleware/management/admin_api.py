"""The administration API, framework-neutral: every user's tokens, for administrators.

A framework mount (:func:`pat_middleware.starlette.admin_routes`,
:func:`pat_middleware.flask.admin_blueprint`) asks the host's ``is_admin``
(unless the request's token already holds the admin scope), turns its
request into an :class:`~pat_middleware.management.api.ApiRequest` and runs
:meth:`AdminAPI.handle`, a flow, with its driver. The plumbing (JSON
bodies, answers, errors, routing) is the self-service API's
(:mod:`pat_middleware.management.api`); the requests are declared in
:mod:`pat_middleware.management.admin_bodies`, the rules are the core's
(:mod:`pat_middleware.core.oversight`).

Routes (below the mount)::

    GET    /tokens               ?state, user_id, scope, name_contains, created_after, created_before,
                                  last_used_after, last_used_before, unused_for, expiring_within,
                                  sort, cursor, limit: {"tokens": [...], "next_cursor": ...}
    POST   /tokens/revoke        {"filter": {...}, "dry_run": bool}: {"dry_run", "count", "ids", "filter"}
    GET    /tokens/{token_id}
    DELETE /tokens/{token_id}    revoke any user's token; 204
    POST   /sweep                {"dry_run": bool} (optional): {"dry_run", "count", "ids"}
    GET    /log                  ?user_id, token_id, kind (repeatable), since, until, cursor, limit
    GET    /openapi.json

Who is admitted: a request whose token (verified by the PAT middleware) holds
``admin_scope`` (implication and wildcards count), or one the host's
``is_admin`` admits. Otherwise 401 with a challenge when the request carries
no credentials at all, 403 when it does. Every change is logged with the
actor ``admin:<user id>``.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pat_middleware.core import defaults
from pat_middleware.core.flow import Flow
from pat_middleware.core.manager import ManagerFlows
from pat_middleware.core.models import Principal, TokenRecord, from_timestamp
from pat_middleware.core.policy import Policy, check_user_id
from pat_middleware.core.scopes import ScopeRules, satisfies
from pat_middleware.core.tokens import is_key_id
from pat_middleware.errors import (
    AuthenticationRequired,
    InsufficientScope,
    PATError,
    PolicyViolation,
    TokenNotFound,
)
from pat_middleware.management.admin_bodies import (
    ADMIN_OPERATIONS,
    AdminLogParams,
    RevokeMatchingArgs,
    SearchParams,
    SweepArgs,
    no_sweep_policy,
    token_filter,
)
from pat_middleware.management.admin_openapi import admin_openapi_document
from pat_middleware.management.api import (
    ApiRequest,
    ApiResponse,
    Handler,
    Route,
    error_reply,
    json_object,
    json_reply,
    match_route,
    public_record,
    reading,
)
from pat_middleware.management.openapi import ADMIN_RECORD_FIELDS
from pat_middleware.management.shapes import ApiError, bad_request, parse, parse_query

if TYPE_CHECKING:
    from pat_middleware.auth import PATAuth

__all__ = ["ADMIN_ROUTES", "AdminAPI", "AdminRoute", "admin_actor", "self_issuable"]

logger = logging.getLogger("pat_middleware")
_NOT_ADMIN = "Administrators only"


def self_issuable(policy: Policy, rules: ScopeRules, scope: str) -> bool:
    """Whether every user may issue themselves a token that acts with ``scope``: the
    policy allows any scope, or its allowed collection grants it (a wildcard, an
    implication). A per-user callable is the host's to judge: ``False``."""
    allowed = policy.allowed_scopes
    if allowed is None:
        return True
    if callable(allowed):
        return False
    return satisfies(rules.expand(allowed), [scope])


def admin_actor(request: ApiRequest, admin_scope: str | None) -> str:
    """The log's actor for an admitted request, ``admin:<user id>``; else the refusal.

    Admitted: a token holding ``admin_scope`` (actor: its user), or the host's
    ``is_admin`` (``request.admin``; actor: the host's ``current_user``, else
    the token's user, else ``admin:unknown``). Refused: 401 (a bare Bearer
    challenge) with neither a token nor a logged-in user; 403
    ``insufficient_scope`` naming ``admin_scope`` for a token without it; 403
    ``forbidden`` for anyone else.
    """
    principal = request.principal
    if principal is not None and admin_scope is not None and principal.has_scopes([admin_scope]):
        return f"admin:{principal.user_id}"
    if request.admin:
        user = request.session_user
        try:
            return f"admin:{check_user_id(user)}"
        except PolicyViolation:
            return f"admin:{principal.user_id}" if principal is not None else "admin:unknown"
    if principal is None and (request.session_user is None or request.session_user == ""):
        raise AuthenticationRequired("Log in as an administrator, or present a token with the admin scope")
    if principal is not None and admin_scope is not None:
        raise InsufficientScope([admin_scope])
    raise ApiError(403, "forbidden", _NOT_ADMIN)


#: An admin operation: a :class:`~pat_middleware.management.api.Route` of :class:`AdminAPI`.
AdminRoute = Route["AdminAPI"]


class AdminAPI:
    """The admin API over one set of :class:`~pat_middleware.core.manager.ManagerFlows`.

    :param admin_scope: a token holding it is admitted (``None``: only the host's ``is_admin``).
    :param realm: the realm of ``WWW-Authenticate`` challenges.
    """

    def __init__(self, flows: ManagerFlows, *, admin_scope: str | None = None, realm: str = defaults.REALM) -> None:
        self.flows = flows
        self.admin_scope = admin_scope
        self.realm = realm
        self._documents: dict[str, bytes] = {}

    @classmethod
    def for_auth(cls, auth: PATAuth, *, admin_scope: str | None = None) -> AdminAPI:
        """The admin API over a :class:`~pat_middleware.auth.PATAuth`'s verifier and policy.
        Warns when every user could issue themselves a token with ``admin_scope``."""
        if admin_scope is not None and self_issuable(auth.policy, auth.verifier.scope_rules, admin_scope):
            logger.warning(
                "admin API: any user can create a token with the admin scope %r (Policy.allowed_scopes allows "
                "it): make allowed_scopes a per-user callable, or admit administrators with is_admin only",
                admin_scope,
            )
        return cls(ManagerFlows(auth.verifier, auth.policy), admin_scope=admin_scope, realm=auth.realm)

    @staticmethod
    def check_guard(is_admin: object, admin_scope: str | None) -> None:
        """At mount time: some way in must exist (``is_admin``, ``admin_scope`` or both)."""
        if is_admin is None and admin_scope is None:
            raise ValueError("give is_admin (the host's check), admin_scope (a token scope) or both")
        if is_admin is not None and not callable(is_admin):
            raise ValueError("is_admin must be a callable")

    def admits_token(self, principal: Principal | None) -> bool:
        """Whether the request's token alone admits it (the mounts then skip ``is_admin``)."""
        return principal is not None and self.admin_scope is not None and principal.has_scopes([self.admin_scope])

    def now(self) -> datetime:
        """The flows' clock, as a datetime."""
        return from_timestamp(self.flows.verifier.clock())

    def record(self, record: TokenRecord) -> dict[str, Any]:
        """``record`` as the admin API shows it: the self-service fields and ``user_id``."""
        return public_record(record, self.now(), self.flows.policy.revoke_unused_after, ADMIN_RECORD_FIELDS)

    # -- entry point ---------------------------------------------------------------
    def handle(self, request: ApiRequest) -> Flow[ApiResponse]:
        """Answer ``request``: a flow to run with the sync or async driver. Never raises ``PATError``."""
        try:
            if request.path == "/openapi.json" and request.method in ("GET", "HEAD"):
                return self._document(request.root)
            route, params = match_route(ADMIN_ROUTES, request.method, request.path)
            actor = admin_actor(request, self.admin_scope)
            if "token_id" in params and not is_key_id(params["token_id"]):
                raise TokenNotFound(params["token_id"])
            return (yield from route.handler(self, request, actor, params))
        except PATError as exc:
            return error_reply(exc, self.realm)

    def _document(self, root: str) -> ApiResponse:
        body = self._documents.get(root)
        if body is None:
            document = admin_openapi_document(self.flows.policy, admin_scope=self.admin_scope, server_url=root)
            body = json.dumps(document).encode()
            if len(self._documents) < 16:  # the root comes from the server's config (or a proxy header)
                self._documents[root] = body
        return ApiResponse(200, [("Content-Type", "application/json")], body)

    # -- handlers (flows) -------------------------------------------------------------
    def search_tokens(self, request: ApiRequest, actor: str, params: dict[str, str]) -> Flow[ApiResponse]:
        """``GET /tokens``: one page of every user's matching tokens."""
        args = parse_query(SearchParams, request.query)
        selection = token_filter(args.given())
        search = self.flows.search(selection, sort=args.sort_key, cursor=args.cursor, limit=args.limit)
        page = yield from reading(search)
        return json_reply(200, {"tokens": [self.record(r) for r in page.records], "next_cursor": page.cursor})

    def get_token(self, request: ApiRequest, actor: str, params: dict[str, str]) -> Flow[ApiResponse]:
        """``GET /tokens/{token_id}``: any user's token."""
        record = yield from self.flows.get(params["token_id"])
        return json_reply(200, self.record(record))

    def revoke_token(self, request: ApiRequest, actor: str, params: dict[str, str]) -> Flow[ApiResponse]:
        """``DELETE /tokens/{token_id}``: revoke any user's token (idempotent), logged with ``actor``."""
        yield from self.flows.revoke(params["token_id"], actor=actor)
        return ApiResponse(204, [("Cache-Control", "no-store")])

    def revoke_matching(self, request: ApiRequest, actor: str, params: dict[str, str]) -> Flow[ApiResponse]:
        """``POST /tokens/revoke``: revoke (or, with ``dry_run``, list) every live token matching the filter."""
        args = parse(RevokeMatchingArgs, json_object(request))
        selection = args.selection()
        try:
            report = yield from self.flows.revoke_matching(selection, actor=actor, dry_run=args.dry_run)
        except PolicyViolation as exc:  # a filter whose duration reaches out of range
            name = exc.field if exc.field in (None, "filter") else f"filter.{exc.field}"
            raise bad_request(name, exc.description) from None
        body = {"dry_run": report.dry_run, "count": report.count, "ids": report.ids, "filter": report.criteria}
        return json_reply(200, body)

    def sweep(self, request: ApiRequest, actor: str, params: dict[str, str]) -> Flow[ApiResponse]:
        """``POST /sweep``: revoke (or, with ``dry_run``, list) every ``inactive`` token."""
        no_body = not request.body.strip() and request.content_type is None
        args = parse(SweepArgs, {} if no_body else json_object(request))
        if self.flows.policy.revoke_unused_after is None:
            raise no_sweep_policy()
        ids = yield from self.flows.sweep(actor=actor, dry_run=args.dry_run)
        return json_reply(200, {"dry_run": args.dry_run, "count": len(ids), "ids": ids})

    def read_log(self, request: ApiRequest, actor: str, params: dict[str, str]) -> Flow[ApiResponse]:
        """``GET /log``: the security log of every user (or of ``user_id``), newest first."""
        args = parse_query(AdminLogParams, request.query)
        page = yield from reading(args.run(self.flows, args.user_id))
        entries = [entry.public_dict() for entry in page.entries]
        return json_reply(200, {"entries": entries, "next_cursor": page.cursor})


_HANDLERS: dict[str, Handler[AdminAPI]] = {
    "searchTokens": AdminAPI.search_tokens,
    "revokeMatching": AdminAPI.revoke_matching,
    "getAnyToken": AdminAPI.get_token,
    "revokeAnyToken": AdminAPI.revoke_token,
    "sweepInactive": AdminAPI.sweep,
    "readSecurityLog": AdminAPI.read_log,
}
#: The admin API's routes, in OpenAPI order (:data:`~pat_middleware.management.admin_bodies.ADMIN_OPERATIONS`).
ADMIN_ROUTES: tuple[AdminRoute, ...] = tuple(
    Route(method, path, op, _HANDLERS[op]) for method, path, op in ADMIN_OPERATIONS
)
