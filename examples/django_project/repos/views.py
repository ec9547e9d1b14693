"""The example's views: plain Django views with ``scopes_required``, an async view, a DRF view."""

from __future__ import annotations

import asyncio
import json

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_http_methods
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from pat_middleware.django import scopes_required
from pat_middleware.django.rest_framework import HasScopes

#: The app's own data: a toy in-memory repository list per user.
REPOS: dict[str, list[str]] = {}


def index(request: HttpRequest) -> JsonResponse:
    principal = request.pat  # type: ignore[attr-defined]
    return JsonResponse({"service": "example", "authenticated_as": principal.user_id if principal else None})


@scopes_required()
def me(request: HttpRequest) -> JsonResponse:
    principal = request.pat  # type: ignore[attr-defined]
    return JsonResponse(
        {"user": principal.user_id, "username": request.user.get_username(), "scopes": sorted(principal.scopes)}
    )


@require_http_methods(["GET", "POST"])
def repos(request: HttpRequest) -> JsonResponse:
    return _create(request) if request.method == "POST" else _list(request)


@scopes_required("repo:read")
def _list(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"repos": REPOS.get(request.pat.user_id, [])})  # type: ignore[attr-defined]


@scopes_required("repo:write")
def _create(request: HttpRequest) -> JsonResponse:
    try:
        name = str(json.loads(request.body or b"{}").get("name", "")).strip()
    except (ValueError, AttributeError):
        name = ""
    if not name:
        return JsonResponse({"error": "name is required"}, status=422)
    REPOS.setdefault(request.pat.user_id, []).append(name)  # type: ignore[attr-defined]
    return JsonResponse({"created": name}, status=201)


@scopes_required("repo:read", resource="name")
def repo(request: HttpRequest, name: str) -> JsonResponse:
    return JsonResponse({"repo": name, "owner": request.pat.user_id})  # type: ignore[attr-defined]


@scopes_required("status:read", "admin", any_of=True)
async def status(request: HttpRequest) -> JsonResponse:
    await asyncio.sleep(0)
    return JsonResponse({"status": "ok"})


class DRFRepos(APIView):
    """``GET /drf/repos``: the same rule with DRF (``request.auth`` is the Principal)."""

    permission_classes: list[type[BasePermission]] = [HasScopes]
    required_scopes = ["repo:read"]

    def get(self, request: Request) -> Response:
        return Response({"repos": REPOS.get(request.auth.user_id, []), "user": request.user.get_username()})
