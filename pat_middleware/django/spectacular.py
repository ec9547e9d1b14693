"""drf-spectacular: the OpenAPI security scheme of ``PATAuthentication``.

Loaded by the app when ``"drf_spectacular"`` is in ``INSTALLED_APPS``: every view
authenticating with :class:`~pat_middleware.django.rest_framework.PATAuthentication`
gets ``security: [{"PersonalAccessToken": []}]`` and the schema an HTTP bearer scheme.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension

__all__ = ["PATScheme"]


class PATScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]  # drf-spectacular registers subclasses
    """``{"type": "http", "scheme": "bearer"}`` for ``PATAuthentication``."""

    target_class = "pat_middleware.django.rest_framework.PATAuthentication"
    name = "PersonalAccessToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A personal access token: Authorization: Bearer pat_...",
        }
