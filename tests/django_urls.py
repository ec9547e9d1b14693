"""URLs of the Django tests' project (``tests.django_settings``): see ``tests/django_views.py``."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from tests import django_views as views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("whoami", views.whoami),
    path("repos", views.repos),
    path("me", views.me),
    path("repos/<path:repo>", views.repo),
    path("any", views.any_scope),
    path("async/repos", views.async_repos),
    path("drf/repos", views.DRFRepos.as_view()),
    path("drf/any", views.DRFAny.as_view()),
    path("drf/open", views.DRFOpen.as_view()),
    path("", include("pat_middleware.django.urls")),
]
