"""Personal access tokens for Django and Django REST framework.

``INSTALLED_APPS += ["pat_middleware.django"]`` (the token table, ``manage.py pat``,
the admin page), ``MIDDLEWARE += ["pat_middleware.django.middleware.PATMiddleware"]``,
settings in ``settings.PAT`` (:mod:`pat_middleware.django.conf`). DRF:
:mod:`pat_middleware.django.rest_framework`. The management API and the settings
page: ``path("", include("pat_middleware.django.urls"))``. See docs/django.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pat_middleware.django.conf import get_auth
from pat_middleware.django.decorators import scopes_required

if TYPE_CHECKING:
    from pat_middleware.django.store import DjangoStore

__all__ = ["DjangoStore", "get_auth", "scopes_required"]


def __getattr__(name: str) -> Any:
    """``DjangoStore`` on first use: the model it imports needs the app registry ready."""
    if name == "DjangoStore":
        from pat_middleware.django.store import DjangoStore

        return DjangoStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
