"""The self-service mounts: ``path("", include("pat_middleware.django.urls"))``.

* ``api/...``: the token management API (``api/tokens``, ``api/openapi.json``);
* ``settings/tokens``: the settings page.

URL names (namespace ``pat``): ``pat:api`` (with ``rest="/tokens"``), ``pat:settings``.
Include it under a prefix to move both: ``path("account/", include(...))``.
"""

from __future__ import annotations

from django.urls import path, re_path

from pat_middleware.django import views

__all__ = ["app_name", "urlpatterns"]

app_name = "pat"

urlpatterns = [
    # every path below api/ (newlines too) reaches the API, which answers in JSON
    re_path(r"^api(?P<rest>/[\s\S]*)\Z", views.token_api, name="api"),
    path("settings/tokens", views.settings_page, name="settings"),
]
