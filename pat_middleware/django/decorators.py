"""``scopes_required``: the scope check of a plain Django view (sync or async)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from asgiref.sync import iscoroutinefunction
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse

from pat_middleware.core.models import require
from pat_middleware.core.route_requirement import ResourceOf, receives_the_resource, route_requirement
from pat_middleware.django.middleware import rejection
from pat_middleware.errors import PATError

__all__ = ["scopes_required"]

F = TypeVar("F", bound=Callable[..., Any])

_CLASS_HINT = "decorate its dispatch method: @method_decorator(scopes_required(...), name='dispatch')"


def scopes_required(
    *scopes: str, any_of: bool = False, resource: ResourceOf = None, any: bool | None = None
) -> Callable[[F], F]:
    """Let a view run only for a token with all of ``scopes`` (or one of them, ``any_of=True``)
    and, with ``resource``, valid for the resource the request is about.

    ``resource`` names a URL keyword argument the view receives (``"repo"`` for
    ``path("repos/<path:repo>", ...)``) or is a callable taking the request.
    Without a token: 401 with a bare challenge; lacking a scope (or the
    resource): 403 ``insufficient_scope``. With no scopes, any valid token will
    do. ``any=True`` is accepted too, as the Flask decorator spells it.

    Mistakes fail where the decorator is written (``ValueError``/``TypeError``):
    invalid scopes, ``any_of=True`` without scopes, a missing ``()``, a class.
    Needs ``PATMiddleware`` (``ImproperlyConfigured`` at the first request otherwise).
    """
    if any is not None:
        if any_of:
            raise TypeError("scopes_required(): give any_of= or any=, not both")
        any_of = any
    required_by = route_requirement("scopes_required", scopes, any_of, resource)

    def denied(request: HttpRequest, kwargs: dict[str, Any]) -> HttpResponse | None:
        auth = getattr(request, "pat_auth", None)
        if auth is None:
            raise ImproperlyConfigured(
                "scopes_required: PATMiddleware did not run for this request; add "
                "'pat_middleware.django.middleware.PATMiddleware' to MIDDLEWARE"
            )
        principal = getattr(request, "pat", None)
        try:
            which = None if principal is None else required_by.resource_id(request, kwargs)
            require(principal, required_by.scopes, required_by.any_of, which)
        except PATError as exc:
            return rejection(exc, auth.realm)
        return None

    def decorate(view: F) -> F:
        required_by.check_target(view, (receives_the_resource,), class_hint=_CLASS_HINT)
        if iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_view(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                refusal = denied(request, kwargs)
                return refusal if refusal is not None else await view(request, *args, **kwargs)

            return cast(F, async_view)

        @functools.wraps(view)
        def sync_view(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            refusal = denied(request, kwargs)
            return refusal if refusal is not None else view(request, *args, **kwargs)

        return cast(F, sync_view)

    return decorate
