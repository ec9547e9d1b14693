"""Django REST framework: ``PATAuthentication``, ``HasScopes`` and ``HasAnyScope``.

::

    REST_FRAMEWORK = {"DEFAULT_AUTHENTICATION_CLASSES": [
        "pat_middleware.django.rest_framework.PATAuthentication",
        "rest_framework.authentication.SessionAuthentication"]}

    class Repos(APIView):
        permission_classes = [HasScopes]
        required_scopes = ["repo:read"]

``PATAuthentication.authenticate`` returns ``(user, principal)``: ``request.auth`` is
the :class:`~pat_middleware.core.models.Principal`. With ``PATMiddleware`` installed it
reads what the middleware verified; without it, it verifies the header itself (the
same core calls). Refusals keep the RFC 6750 answer of the other edges: status,
``WWW-Authenticate`` challenge and the ``{"error", "error_description"}`` body, and
``authenticate_header`` gives DRF the ``Bearer`` challenge, so an anonymous request
to a protected view is a 401, not a 403.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from pat_middleware.core.models import Principal, require
from pat_middleware.core.route_requirement import RouteRequirement, route_requirement
from pat_middleware.django.conf import get_auth
from pat_middleware.django.middleware import default_user
from pat_middleware.errors import AuthenticationRequired, InvalidToken, PATError

__all__ = ["HasAnyScope", "HasScopes", "PATAuthentication", "TokenRefused"]

#: Where a refusal is kept for ``authenticate_header`` (the challenge names the error).
_ERROR_ATTR = "pat_error"


class TokenRefused(exceptions.APIException):
    """A :class:`~pat_middleware.errors.PATError` as DRF answers it: the same status,
    challenge, ``Retry-After`` and JSON body as ``error_response``."""

    def __init__(self, error: PATError, realm: str) -> None:
        self.status_code = error.status_code
        headers = dict(error.headers(realm))
        self.auth_header = headers.get("WWW-Authenticate")
        if "Retry-After" in headers:
            self.wait = float(headers["Retry-After"])
        super().__init__({"error": error.error or "unauthorized", "error_description": error.description})


def _refused(request: Request, error: PATError) -> TokenRefused:
    setattr(request._request, _ERROR_ATTR, error)
    return TokenRefused(error, get_auth().realm)


class PATAuthentication(BaseAuthentication):
    """Authenticate by ``Authorization: Bearer <token>``: ``(user, principal)``, or ``None``
    without a token (the next authentication class, or anonymous, decides).

    ``user`` is the active user whose primary key is the token's ``user_id`` (or
    ``settings.PAT["USER_RESOLVER"]``'s); a token whose user is gone or inactive
    is refused with 401 ``invalid_token``, as DRF's ``TokenAuthentication`` does.
    """

    def authenticate(self, request: Request) -> tuple[Any, Principal] | None:
        django_request = request._request
        if hasattr(django_request, "pat"):  # PATMiddleware verified it (or found no token)
            principal: Principal | None = django_request.pat
        else:
            principal = self._verify(request)
        if principal is None:
            return None
        from pat_middleware.django.conf import get_settings

        user = (get_settings().user_resolver or default_user)(principal)
        if user is None:
            raise _refused(request, InvalidToken("unknown", principal.token_id))  # the user is gone or inactive
        return user, principal

    def _verify(self, request: Request) -> Principal | None:
        from pat_middleware.core.edge import RequestRules

        auth = get_auth()
        meta = request._request.META
        header = meta.get("HTTP_AUTHORIZATION")
        client_ip = meta.get("REMOTE_ADDR")
        try:
            if header is not None and (principal := auth.verifier.cached_bearer(header, client_ip)) is not None:
                return principal
            token = RequestRules().token(() if header is None else (header,))
            return None if token is None else auth.verify(token, client_ip=client_ip)
        except PATError as exc:
            raise _refused(request, exc) from None

    def authenticate_header(self, request: Request) -> str:
        """The challenge of a 401: the refusal's, else a bare ``Bearer realm="..."``."""
        error = getattr(request._request, _ERROR_ATTR, None)
        challenge = (error if isinstance(error, PATError) else AuthenticationRequired()).challenge(get_auth().realm)
        assert challenge is not None
        return challenge


@functools.lru_cache(maxsize=1024)
def _requirement(owner: str, scopes: tuple[Any, ...], any_of: bool) -> RouteRequirement:
    return route_requirement(owner, scopes, any_of)


class HasScopes(BasePermission):
    """Allow a request whose token has all of the view's ``required_scopes``.

    A request without a token: 401 with a bare challenge (DRF asks the
    authentication classes); a token lacking a scope: 403 ``insufficient_scope``
    with its challenge. A view without ``required_scopes`` is a configuration
    error (``ImproperlyConfigured``), as a misspelt attribute must not open a view.
    """

    any_of = False

    def has_permission(self, request: Request, view: Any) -> bool:
        scopes = getattr(view, "required_scopes", None)
        name = type(self).__name__
        if scopes is None or isinstance(scopes, str) or not isinstance(scopes, Sequence):
            raise ImproperlyConfigured(
                f"{name} needs {type(view).__name__}.required_scopes: a list of scopes, not {scopes!r}"
            )
        try:
            required = _requirement(f"{name} on {type(view).__name__}", tuple(scopes), self.any_of)
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(str(exc)) from None
        principal = request.auth if isinstance(request.auth, Principal) else None
        if principal is None:
            raise exceptions.NotAuthenticated()
        try:
            require(principal, required.scopes, required.any_of)
        except PATError as exc:
            raise _refused(request, exc) from None
        return True


class HasAnyScope(HasScopes):
    """:class:`HasScopes`, satisfied by any one of the view's ``required_scopes``."""

    any_of = True
