"""Views of the Django tests' project: plain views (sync and async) and DRF views."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from pat_middleware.django import scopes_required
from pat_middleware.django.rest_framework import HasAnyScope, HasScopes, PATAuthentication


def _who(request: HttpRequest) -> dict[str, Any]:
    principal = request.pat  # type: ignore[attr-defined]
    return {"user": principal.user_id if principal else None}


def whoami(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_who(request))


@scopes_required("repo:read")
def repos(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_who(request))


@scopes_required()
def me(request: HttpRequest) -> JsonResponse:
    return JsonResponse({**_who(request), "django_user": request.user.get_username() or None})


@scopes_required("repo:read", resource="repo")
def repo(request: HttpRequest, repo: str) -> JsonResponse:
    return JsonResponse(_who(request))


@scopes_required("repo:write", "issues:read", any_of=True)
def any_scope(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_who(request))


@scopes_required("repo:read")
async def async_repos(request: HttpRequest) -> JsonResponse:
    user = await request.auser()
    return JsonResponse({**_who(request), "django_user": user.get_username() or None})


class DRFRepos(APIView):
    authentication_classes = [PATAuthentication]
    permission_classes = [HasScopes]
    required_scopes = ["repo:read"]

    def get(self, request: Request) -> Response:
        return Response({"user": request.auth.user_id, "django_user": request.user.get_username()})


class DRFAny(APIView):
    authentication_classes = [PATAuthentication]
    permission_classes = [HasAnyScope]
    required_scopes = ["repo:write", "issues:read"]

    def get(self, request: Request) -> Response:
        return Response({"user": request.auth.user_id})


class DRFOpen(APIView):
    authentication_classes = [PATAuthentication]
    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        return Response({"user": request.auth.user_id if request.auth else None})
