"""The ASGI edge: ``PATMiddleware`` checks bearer tokens on HTTP and WebSocket.

Pure ASGI (not built on Starlette's base HTTP middleware); lifespan and other scope types pass
through untouched. Every rule comes from the core: which token a request
presents (:class:`~pat_middleware.core.edge.RequestRules`), whether it is valid
(``PATAuth.averify``) and how an error is answered
(:func:`~pat_middleware.errors.error_response`). This module only reads the
scope and writes ASGI messages.

After the middleware, ``scope["user"]`` is a Starlette ``BaseUser``
(:class:`PATUser`, or ``UnauthenticatedUser``), ``scope["auth"]`` an
``AuthCredentials`` with the token's effective scopes, ``scope["pat"]`` the
:class:`~pat_middleware.core.models.Principal` (``None`` when anonymous) and
``scope["pat_auth"]`` the ``PATAuth``, so Starlette's own ``requires`` works
on top, as does :func:`pat_middleware.starlette.requires_scopes`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable

from starlette.authentication import AuthCredentials, BaseUser, UnauthenticatedUser
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from pat_middleware.auth import PATAuth
from pat_middleware.core.edge import EXPIRY_HEADER, RequestRules, expiry_header_name, expiry_value
from pat_middleware.core.models import Principal
from pat_middleware.errors import PATError, StoreUnavailable, error_response

__all__ = ["PATErrorResponse", "PATMiddleware", "PATUser", "close_code", "rejection"]

#: WebSocket close codes used when the server offers no denial response.
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013
_DENIAL_EXTENSION = "websocket.http.response"
#: How many principals' user/credentials objects the middleware keeps ready.
_SEEN_LIMIT = 4096
#: What the middleware keeps per principal: it, its user, credentials and expiry header.
_Seen = tuple[Principal, "PATUser", AuthCredentials, tuple[bytes, bytes] | None]


class PATUser(BaseUser):
    """The user a token speaks for: ``identity`` and ``display_name`` are the user id."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def identity(self) -> str:
        return self.principal.user_id

    @property
    def display_name(self) -> str:
        return self.principal.user_id

    @property
    def token_id(self) -> str:
        """The id (key id) of the token that authenticated the request."""
        return self.principal.token_id

    @property
    def scopes(self) -> frozenset[str]:
        """The token's effective scopes."""
        return self.principal.scopes

    def __repr__(self) -> str:
        return f"PATUser({self.principal.user_id!r}, token_id={self.principal.token_id!r})"


class PATErrorResponse(Response):
    """The core's JSON answer to a ``PATError`` (status, ``WWW-Authenticate``, body)."""

    def __init__(self, exc: PATError, realm: str) -> None:
        status, headers, body = error_response(exc, realm)
        super().__init__(body, status, headers=dict(headers))


def close_code(exc: PATError) -> int:
    """The WebSocket close code refusing a handshake: 1013 (try again later) when
    the store is unavailable, else 1008 (policy violation)."""
    return TRY_AGAIN_LATER if isinstance(exc, StoreUnavailable) else POLICY_VIOLATION


def rejection(exc: PATError, realm: str, scope: Scope) -> ASGIApp:
    """The ASGI app that answers ``exc`` instead of the application.

    HTTP gets :class:`PATErrorResponse`. A WebSocket handshake gets the same
    response through the denial-response extension when the server offers
    it; otherwise it is closed before accept, with 1008 (policy violation),
    or 1013 (try again later) when the store is unavailable.
    """
    if scope["type"] == "websocket" and _DENIAL_EXTENSION not in (scope.get("extensions") or {}):
        return WebSocketClose(close_code(exc), exc.error or "unauthorized")
    return PATErrorResponse(exc, realm)


class PATMiddleware:
    """Authenticates every HTTP request and WebSocket handshake by bearer token.

    :param auth: the :class:`~pat_middleware.auth.PATAuth` engine.
    :param required: answer 401 to requests without credentials (except on
        ``exempt`` paths). Off: they pass as anonymous. Invalid credentials
        are rejected either way, on every path.
    :param exempt: path prefixes that need no token when ``required`` is on
        (``"/health"`` covers ``/health`` and ``/health/...``, not ``/healthz``).
    :param allow_query_token: also accept ``?access_token=`` (RFC 6750 §2.3; off).
    :param expiry_header: response header carrying the token's expiry
        (``PAT-Token-Expiration: 2026-12-31 23:59:59 UTC``); ``None`` to omit.
    """

    def __init__(
        self,
        app: ASGIApp,
        auth: PATAuth,
        *,
        required: bool = False,
        exempt: Iterable[str] | str = (),
        allow_query_token: bool = False,
        expiry_header: str | None = EXPIRY_HEADER,
    ) -> None:
        self.app = app
        self.auth = auth
        self.rules = RequestRules(required=required, exempt=exempt, allow_query_token=allow_query_token)
        self._token = self.rules.token
        self._allow_query = self.rules.allow_query
        self._cached_header = auth.verifier.cached_header
        header_name = expiry_header_name(expiry_header)
        self._header_name = header_name.lower().encode("latin-1") if header_name else None
        self._seen: dict[int, _Seen] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        raw: list[bytes] = []
        for name, value in scope["headers"]:  # one pass; a plain loop is the fastest on 3.11
            if name == b"authorization":
                raw.append(value)
        client = scope.get("client")
        client_ip = client[0] if client else None
        try:
            principal = None
            if len(raw) == 1 and not self._allow_query:
                principal = self._cached_header(raw[0], client_ip)  # the hot path
            if principal is None:
                authorization = [value.decode("latin-1") for value in raw]
                if self._allow_query:
                    token = self._token(authorization, scope.get("query_string", b"").decode("latin-1"))
                else:
                    token = self._token(authorization)
                if token is None:
                    self.rules.check_anonymous(_app_path(scope))
                else:
                    principal = await self.auth.averify(token, client_ip=client_ip)
        except PATError as exc:
            await rejection(exc, self.auth.realm, scope)(scope, receive, send)
            return

        scope["pat_auth"] = self.auth
        scope["pat"] = principal
        if principal is None:
            scope["user"] = UnauthenticatedUser()
            scope["auth"] = AuthCredentials()
            await self.app(scope, receive, send)
            return
        seen = self._seen.get(id(principal))
        if seen is None or seen[0] is not principal:
            seen = self._remember(principal)
        scope["user"] = seen[1]
        scope["auth"] = seen[2]
        header = seen[3]
        if header is None or kind != "http":
            await self.app(scope, receive, send)
            return

        def send_with_expiry(message: Message) -> Awaitable[None]:
            # Returns send's own awaitable: no extra coroutine per message.
            if message["type"] == "http.response.start":
                # copies: the app may send the same message dict (or headers list) again
                message = {**message, "headers": [*message.get("headers", ()), header]}
            return send(message)

        await self.app(scope, receive, send_with_expiry)

    def _remember(self, principal: Principal) -> _Seen:
        """Build (once per principal object) what the scope gets for it.

        Keyed by identity, with the principal kept in the value so an id is
        never mistaken for another object's; the local cache hands out the
        same ``Principal`` object on every hit.
        """
        header = None
        if self._header_name is not None and principal.expires_at is not None:
            header = (self._header_name, expiry_value(principal.expires_at).encode("latin-1"))
        seen = (principal, PATUser(principal), _Credentials(principal.scopes), header)
        if len(self._seen) >= _SEEN_LIMIT:
            self._seen.clear()
        self._seen[id(principal)] = seen
        return seen


class _Credentials(AuthCredentials):
    """``AuthCredentials`` shared between requests of one principal: ``scopes`` is
    sorted and cannot be changed by one request under another's feet."""

    def __init__(self, scopes: Iterable[str]) -> None:
        self.scopes: list[str] = _FrozenList(sorted(scopes))


class _FrozenList(list[str]):
    """A list that refuses in-place changes."""

    def _refuse(self, *args: object, **kwargs: object) -> None:
        raise TypeError("the scopes of a token cannot be changed")

    append = extend = insert = remove = pop = clear = sort = reverse = _refuse  # type: ignore[assignment]
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse  # type: ignore[assignment]


def _app_path(scope: Scope) -> str:
    """The path as the application routes it: ``scope["path"]`` minus ``root_path``."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path
