"""``PATMiddleware``: verify the bearer token before the view, sync or async Django.

Add it after Django's ``AuthenticationMiddleware``::

    MIDDLEWARE = [..., "django.contrib.auth.middleware.AuthenticationMiddleware",
                  "pat_middleware.django.middleware.PATMiddleware", ...]

A request with a valid token gets ``request.pat`` (the
:class:`~pat_middleware.core.models.Principal`), ``request.pat_auth`` (the
``PATAuth``) and ``request.user`` / ``request.auser()``: the user whose primary key
is the token's ``user_id``, looked up lazily (the hot path does no I/O);
``AnonymousUser`` when there is none or it is inactive. It is exempt from CSRF
checks, as with DRF's token authentication: a cross-site form cannot send an
``Authorization`` header. A request without a token gets ``request.pat = None``
and keeps its session user. A bad, expired or revoked token, or a malformed
header, gets the RFC 6750 answer (``pat_middleware.errors.error_response``)
before any view runs.

Client address: ``REMOTE_ADDR`` is what allowed-CIDR lists are checked against;
behind a reverse proxy, correct it in a middleware placed before this one.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils.functional import SimpleLazyObject

from pat_middleware.core.edge import RequestRules, expiry_value
from pat_middleware.django.conf import get_auth, get_settings
from pat_middleware.errors import PATError, error_response

if TYPE_CHECKING:
    from pat_middleware.auth import PATAuth
    from pat_middleware.core.models import Principal

__all__ = ["PATMiddleware", "PATRequest", "default_user", "rejection"]

#: ``expiry_value`` formats with strftime; a token's expiry never changes.
_expiry_value = functools.lru_cache(maxsize=4096)(expiry_value)


class PATRequest(HttpRequest):
    """What :class:`PATMiddleware` adds to a request, for type checkers: annotate a
    view's ``request: PATRequest`` to read ``request.pat`` checked."""

    pat: Principal | None
    pat_auth: PATAuth
    _dont_enforce_csrf_checks: bool


def rejection(exc: PATError, realm: str) -> HttpResponse:
    """The RFC 6750 answer to ``exc`` as a Django response (the same on every edge)."""
    status, headers, body = error_response(exc, realm)
    response = HttpResponse(body, status=status)
    for name, value in headers:
        response[name] = value
    return response


def default_user(principal: Principal) -> Any:
    """The active user whose primary key is ``principal.user_id``, or ``None``."""
    from django.contrib.auth import get_user_model
    from django.core.exceptions import ValidationError

    model = get_user_model()
    try:
        user = model._default_manager.filter(pk=principal.user_id).first()
    except (ValueError, TypeError, ValidationError):  # a user id that is no primary key of this model
        return None
    return user if user is not None and getattr(user, "is_active", True) else None


class PATMiddleware:
    """Django middleware verifying ``Authorization: Bearer`` tokens (see the module doc)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        conf = get_settings()
        self.conf = conf
        self.rules = RequestRules(required=conf.required, exempt=conf.exempt, allow_query_token=conf.allow_query_token)
        self.resolve = conf.user_resolver or default_user

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        auth = get_auth()
        try:
            found = self._find(request, auth)
            if isinstance(found, str):
                found = auth.verify(found, client_ip=request.META.get("REMOTE_ADDR"))
        except PATError as exc:
            return rejection(exc, auth.realm)
        self._attach(request, found, auth)
        return self._expiry(self.get_response(request), found)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        auth = get_auth()
        try:
            found = self._find(request, auth)
            if isinstance(found, str):
                found = await auth.averify(found, client_ip=request.META.get("REMOTE_ADDR"))
        except PATError as exc:
            return rejection(exc, auth.realm)
        self._attach(request, found, auth)
        response: Awaitable[HttpResponseBase] = self.get_response(request)
        return self._expiry(await response, found)

    def _find(self, request: HttpRequest, auth: PATAuth) -> Principal | str | None:
        """The principal from the cache (the hot path: no I/O), else the token to verify,
        else ``None`` (anonymous). ``PATError`` for a malformed or missing credential."""
        meta = request.META
        header = meta.get("HTTP_AUTHORIZATION")
        allow_query = self.rules.allow_query
        if header is not None and not allow_query:
            principal = auth.verifier.cached_bearer(header, meta.get("REMOTE_ADDR"))
            if principal is not None:
                return principal
        query = meta.get("QUERY_STRING", "") if allow_query else ""
        token = self.rules.token(() if header is None else (header,), query)
        if token is None:
            self.rules.check_anonymous(request.path_info)
        return token

    def _attach(self, request: HttpRequest, principal: Principal | None, auth: PATAuth) -> None:
        typed = cast(PATRequest, request)
        typed.pat = principal
        typed.pat_auth = auth
        if principal is None:
            return
        resolve = self.resolve

        @functools.cache  # one lookup per request, whether request.user or auser() asks first
        def user() -> Any:
            from django.contrib.auth.models import AnonymousUser

            found = resolve(principal)
            return found if found is not None else AnonymousUser()

        async def auser() -> Any:
            return await sync_to_async(user)()

        typed.user = cast(Any, SimpleLazyObject(user))  # a lazy proxy, as AuthenticationMiddleware sets
        request.auser = auser
        typed._dont_enforce_csrf_checks = True  # a header, not ambient credentials

    def _expiry(self, response: HttpResponseBase, principal: Principal | None) -> HttpResponseBase:
        header = self.conf.expiry_header
        if principal is not None and principal.expires_at is not None and header is not None:
            response[header] = _expiry_value(principal.expires_at)
        return response
