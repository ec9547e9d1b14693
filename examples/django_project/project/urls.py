"""URLs of the example project."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from repos import views

urlpatterns = [
    path("", views.index),
    path("me", views.me),
    path("repos", views.repos),
    path("repos/<str:name>", views.repo),
    path("drf/repos", views.DRFRepos.as_view()),
    path("status", views.status),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("pat_middleware.django.urls")),  # /api/tokens..., /settings/tokens
]
