"""The token management REST API, framework-neutral.

A framework mount (:mod:`pat_middleware.starlette.routes`,
:mod:`pat_middleware.flask.blueprints`) turns its request into an
:class:`ApiRequest` and runs :meth:`TokenAPI.handle`, a *flow* (see
:mod:`pat_middleware.core.verifier`), with the sync or the async driver; the flow
returns an :class:`ApiResponse`. The API's rules live here once: who may
act, reading the JSON body, JSON answers, error mapping. What each request
may carry is declared once in :mod:`pat_middleware.management.bodies` (validated by
:func:`~pat_middleware.management.shapes.parse`); the OpenAPI 3.1 document
(:mod:`pat_middleware.management.openapi`) is built from the same declarations.

Routes (below the mount)::

    GET    /tokens                 ?state=active|expired|revoked|inactive|all
    POST   /tokens                 201 {"token": <plaintext, once>, "record": {...}}
    GET    /tokens/{token_id}
    PATCH  /tokens/{token_id}      name, description, expiry, allowed_cidrs, resources
    DELETE /tokens/{token_id}      revoke; 204
    POST   /tokens/{token_id}/rotate   201 {"token": ..., "record": ...}
    GET    /log                    ?token_id, kind (repeatable), since, until, cursor, limit:
                                   {"entries": [...], "next_cursor": ...} (your own entries)
    GET    /openapi.json
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pat_middleware.core import defaults
from pat_middleware.core.flow import Flow
from pat_middleware.core.manager import ManagerFlows
from pat_middleware.core.models import NewToken, Principal, TokenRecord, from_timestamp, require
from pat_middleware.core.policy import check_user_id
from pat_middleware.core.query import StateFilter
from pat_middleware.core.tokens import is_key_id
from pat_middleware.errors import AuthenticationRequired, PATError, PolicyViolation, TokenNotFound, error_response
from pat_middleware.management.bodies import (
    MANAGE_SCOPE,
    MAX_BODY,
    OPERATIONS,
    RECORD_FIELDS,
    STATES,
    CreateArgs,
    LogParams,
    RotateArgs,
    UpdateArgs,
    check_handing_out,
)
from pat_middleware.management.openapi import openapi_document
from pat_middleware.management.shapes import ApiError, bad_request, invalid, parse, parse_query, unreadable_body

if TYPE_CHECKING:
    from pat_middleware.auth import PATAuth

__all__ = [
    "MANAGE_SCOPE",
    "MAX_BODY",
    "RECORD_FIELDS",
    "ROUTES",
    "ApiError",
    "ApiRequest",
    "ApiResponse",
    "CreateArgs",
    "Handler",
    "RotateArgs",
    "Route",
    "TokenAPI",
    "UpdateArgs",
    "acting_user",
    "check_handing_out",
    "error_reply",
    "json_object",
    "json_reply",
    "match_route",
    "public_record",
    "reading",
    "unreadable_body",
]

_BAD_SESSION_USER = "The logged-in user's id cannot own tokens"


# -- requests and answers ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ApiRequest:
    """A framework request, reduced to what the API and the settings page read.

    ``path`` is below the mount (``/tokens/abc``); ``root`` is the mount's URL
    path (``/api``). ``principal`` is the verified token the request carries
    (``scope["pat"]`` / ``environ["pat.principal"]``), ``session_user`` the
    host app's logged-in user as its ``current_user`` returned it (``None`` or
    ``""``: nobody; :func:`acting_user` checks anything else). ``csrf_token``
    is the session's expected CSRF token (settings page only). ``admin``: the
    host's ``is_admin`` admitted the request (admin API only).
    """

    method: str
    path: str
    root: str = ""
    query: tuple[tuple[str, str], ...] = ()
    content_type: str | None = None
    body: bytes = b""
    principal: Principal | None = None
    session_user: object = None
    csrf_token: str | None = None
    admin: bool = False

    def query_values(self, name: str) -> list[str]:
        """Every value of query parameter ``name``."""
        return [value for key, value in self.query if key == name]


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """``(status, headers, body)``, ready for any framework."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""


def error_reply(exc: PATError, realm: str) -> ApiResponse:
    """The JSON answer to ``exc``: ``{"error", "error_description"[, "field"]}`` and its headers."""
    status, headers, _ = error_response(exc, realm)
    description = "No such token" if isinstance(exc, TokenNotFound) else exc.description
    body: dict[str, Any] = {"error": exc.error or "unauthorized", "error_description": description}
    problem_field = getattr(exc, "field", None)
    if problem_field:
        body["field"] = problem_field
    return ApiResponse(status, headers, json.dumps(body).encode())


def json_reply(status: int, data: Any, headers: Sequence[tuple[str, str]] = ()) -> ApiResponse:
    """A JSON answer; never cached (records are per user, new tokens secret)."""
    base = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
    return ApiResponse(status, [*base, *headers], json.dumps(data).encode())


def public_record(
    record: TokenRecord,
    now: datetime,
    unused_after: timedelta | None = None,
    fields: Iterable[str] = RECORD_FIELDS,
) -> dict[str, Any]:
    """A record as the API shows it: ``fields`` of ``public_dict`` (its state judged
    at ``now`` with ``unused_after``, the policy's ``revoke_unused_after``)."""
    data = record.public_dict(now, unused_after)
    return {key: data[key] for key in fields}


def new_token_body(new: NewToken, now: datetime, unused_after: timedelta | None = None) -> dict[str, Any]:
    """``{"token": plaintext, "record": ...}``: the one place a plaintext is shown."""
    return {"token": new.token, "record": public_record(new.record, now, unused_after)}


T = TypeVar("T")


def reading(flow: Flow[T]) -> Flow[T]:
    """Run a flow whose every ``PolicyViolation`` is about the request's query
    parameters (a cursor, a limit, a kind...): a 400 naming the parameter."""
    try:
        return (yield from flow)
    except PolicyViolation as exc:
        raise bad_request(exc.field, exc.description) from None


def acting_user(request: ApiRequest, manage_scope: str) -> str:
    """Whose tokens the request manages.

    A request carrying a token acts for the token's user, and only if the
    token has ``manage_scope`` (403 otherwise), whatever session it also has.
    Otherwise the host app's session user; nobody (``None`` or ``""``): 401.
    A session user no token can belong to (not a string, or refused by
    :func:`~pat_middleware.core.policy.check_user_id`: blank, too long, control
    characters) is a 422 ``PolicyViolation`` on field ``user_id``, before any
    route runs: the API and the settings page answer it alike.
    """
    if request.principal is not None:
        return require(request.principal, [manage_scope]).user_id
    user = request.session_user
    if user is None or (isinstance(user, str) and not user):
        raise AuthenticationRequired("Log in or present a token with the token management scope")
    if not isinstance(user, str):
        raise PolicyViolation(f"{_BAD_SESSION_USER}: it must be a string, not {type(user).__name__}", "user_id")
    try:
        return check_user_id(user)
    except PolicyViolation as exc:
        raise PolicyViolation(f"{_BAD_SESSION_USER}: {exc}", "user_id") from None


# -- body parsing and validation ---------------------------------------------------
def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_object(request: ApiRequest) -> dict[str, Any]:
    """The request's JSON object body (an empty body counts as ``{}``).

    413 when too large, 415 unless ``Content-Type: application/json`` (which
    also keeps cross-site HTML forms out), 400 when malformed, 422 when not
    an object.
    """
    if len(request.body) > MAX_BODY:
        raise ApiError(413, "payload_too_large", f"The body may be at most {MAX_BODY} bytes")
    media_type = (request.content_type or "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "Send the body as Content-Type: application/json")
    if not request.body.strip():
        return {}
    try:
        data = json.loads(request.body.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        message = str(exc).splitlines()[0][:200] if not isinstance(exc, RecursionError) else "nested too deeply"
        raise ApiError(400, "invalid_json", f"The body is not valid JSON: {message}") from None
    if not isinstance(data, dict):
        raise invalid(None, "The body must be a JSON object")
    return data


def parse_state(request: ApiRequest) -> StateFilter:
    """The ``state`` query parameter (default ``active``)."""
    values = request.query_values("state")
    if not values:
        return "active"
    if len(values) > 1 or values[0] not in STATES:
        raise invalid("state", f"state must be one of {', '.join(STATES)}")
    return values[0]


# -- routing --------------------------------------------------------------------------
class Routed(Protocol):
    """A route of either API: its method and its path pattern."""

    @property
    def method(self) -> str: ...
    @property
    def regex(self) -> re.Pattern[str]: ...


R = TypeVar("R", bound=Routed)
A = TypeVar("A")
#: An operation's handler: the API object, the request, the acting user (or admin), path values.
Handler = Callable[[A, ApiRequest, str, dict[str, str]], Flow[ApiResponse]]


@dataclass(frozen=True, slots=True)
class Route(Generic[A]):
    """One API operation: method, path template, handler (used by the OpenAPI builder
    too); ``A`` is the API class the handler is a method of."""

    method: str
    template: str
    operation_id: str
    handler: Handler[A]
    regex: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.template)
        object.__setattr__(self, "regex", re.compile(pattern))


def match_route(routes: Iterable[R], method: str, path: str) -> tuple[R, dict[str, str]]:
    """The route for ``method path``; 404 for an unknown path, 405 for a known path's other methods."""
    allowed: list[str] = []
    wanted = "GET" if method == "HEAD" else method
    for route in routes:
        found = route.regex.fullmatch(path)
        if found is None:
            continue
        if route.method == wanted:
            return route, found.groupdict()
        allowed.append(route.method)
    if not allowed:
        raise ApiError(404, "not_found", "No such route")
    if "GET" in allowed:
        allowed.append("HEAD")
    raise ApiError(405, "method_not_allowed", f"Use {', '.join(allowed)}", headers=[("Allow", ", ".join(allowed))])


class TokenAPI:
    """The management API bound to one set of :class:`~pat_middleware.core.manager.ManagerFlows`.

    :param manage_scope: the scope a token needs to manage tokens (default ``tokens:manage``).
    :param realm: the realm of ``WWW-Authenticate`` challenges.
    """

    def __init__(self, flows: ManagerFlows, *, manage_scope: str = MANAGE_SCOPE, realm: str = defaults.REALM) -> None:
        self.flows = flows
        self.manage_scope = manage_scope
        self.realm = realm
        self._documents: dict[str, bytes] = {}

    @classmethod
    def for_auth(cls, auth: PATAuth, *, manage_scope: str = MANAGE_SCOPE) -> TokenAPI:
        """The API over a :class:`~pat_middleware.auth.PATAuth`'s verifier and policy."""
        return cls(ManagerFlows(auth.verifier, auth.policy), manage_scope=manage_scope, realm=auth.realm)

    def now(self) -> datetime:
        """The flows' clock, as a datetime."""
        return from_timestamp(self.flows.verifier.clock())

    def record(self, record: TokenRecord) -> dict[str, Any]:
        """``record`` as the API shows it now, under the policy's inactivity rule."""
        return public_record(record, self.now(), self.flows.policy.revoke_unused_after)

    # -- entry point ---------------------------------------------------------------
    def handle(self, request: ApiRequest) -> Flow[ApiResponse]:
        """Answer ``request``: a flow to run with the sync or async driver. Never raises ``PATError``."""
        try:
            if request.path == "/openapi.json" and request.method in ("GET", "HEAD"):
                return self._document(request.root)
            route, params = self.match(request.method, request.path)
            user_id = acting_user(request, self.manage_scope)
            if "token_id" in params and not is_key_id(params["token_id"]):
                raise TokenNotFound(params["token_id"])
            return (yield from route.handler(self, request, user_id, params))
        except PATError as exc:
            return error_reply(exc, self.realm)

    def match(self, method: str, path: str) -> tuple[Route[TokenAPI], dict[str, str]]:
        """The route for ``method path`` (:func:`match_route`)."""
        return match_route(ROUTES, method, path)

    def _document(self, root: str) -> ApiResponse:
        body = self._documents.get(root)
        if body is None:
            document = openapi_document(self.flows.policy, manage_scope=self.manage_scope, server_url=root)
            body = json.dumps(document).encode()
            if len(self._documents) < 16:  # the root comes from the server's config (or a proxy header)
                self._documents[root] = body
        return ApiResponse(200, [("Content-Type", "application/json")], body)

    # -- handlers (flows) -------------------------------------------------------------
    def list_tokens(self, request: ApiRequest, user_id: str, params: dict[str, str]) -> Flow[ApiResponse]:
        """``GET /tokens``."""
        records = yield from self.flows.list(user_id, parse_state(request))
        return json_reply(200, {"tokens": [self.record(r) for r in records]})

    def create_token(self, request: ApiRequest, user_id: str, params: dict[str, str]) -> Flow[ApiResponse]:
        """``POST /tokens``."""
        args = parse(CreateArgs, json_object(request))
        new = yield from args.run(self.flows, user_id, request.principal)
        return self._new_token_reply(request, new)

    def get_token(self, request: ApiRequest, user_id: str, params: dict[str, str]) -> Flow[ApiResponse]:
        """``GET /tokens/{token_id}``."""
        record = yield from self.flows.get(params["token_id"], user_id)
        return json_reply(200, self.record(record))

    def update_token(self, request: ApiRequest, user_id: str, params: dict[str, str]) -> Flow[ApiResponse]:
        """``PATCH /tokens/{token_id}``."""
        args = parse(UpdateArgs, json_object(request))
        record = yield from args.run(self.flows, params["token_id"], user_id, request.principal)
        return json_reply(200, self.record(record))

    def revoke_token(self, request: ApiRequest, user_id: str, params: dict[str, str]) -> Flow[ApiResponse]:
        """``DELETE /tokens/{token_id}``: revoke (idempotent)."""
        yield from self.flows.revoke(params["token_id"], user_id)
        return ApiResponse(204, [("Cache-Control", "no-store")])

    def rotate_token(self, request: ApiRequest, user_id: str, params: dict[str, str]) -> Flow[ApiResponse]:
        """``POST /tokens/{token_id}/rotate``."""
        args = parse(RotateArgs, json_object(request))
        new = yield from args.run(self.flows, params["token_id"], user_id, request.principal)
        return self._new_token_reply(request, new)

    def read_log(self, request: ApiRequest, user_id: str, params: dict[str, str]) -> Flow[ApiResponse]:
        """``GET /log``: the acting user's security log, newest first."""
        args = parse_query(LogParams, request.query)
        page = yield from reading(args.run(self.flows, user_id))
        entries = [entry.public_dict() for entry in page.entries]
        return json_reply(200, {"entries": entries, "next_cursor": page.cursor})

    def _new_token_reply(self, request: ApiRequest, new: NewToken) -> ApiResponse:
        location = f"{request.root}/tokens/{new.record.id}"
        body = new_token_body(new, self.now(), self.flows.policy.revoke_unused_after)
        return json_reply(201, body, [("Location", location)])


_HANDLERS: dict[str, Handler[TokenAPI]] = {
    "listTokens": TokenAPI.list_tokens,
    "createToken": TokenAPI.create_token,
    "getToken": TokenAPI.get_token,
    "updateToken": TokenAPI.update_token,
    "revokeToken": TokenAPI.revoke_token,
    "rotateToken": TokenAPI.rotate_token,
    "readLog": TokenAPI.read_log,
}
#: The API's routes, in OpenAPI order (:data:`~pat_middleware.management.bodies.OPERATIONS`).
ROUTES: tuple[Route[TokenAPI], ...] = tuple(Route(method, path, op, _HANDLERS[op]) for method, path, op in OPERATIONS)
