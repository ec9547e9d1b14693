"""The Django app ``pat_middleware.django`` (label ``pat_middleware``)."""

from __future__ import annotations

from django.apps import AppConfig, apps

__all__ = ["PATConfig"]


class PATConfig(AppConfig):
    """Checks ``settings.PAT`` at start-up and resets the engine when the setting changes (tests)."""

    name = "pat_middleware.django"
    label = "pat_middleware"
    verbose_name = "Personal access tokens"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core.signals import setting_changed

        from pat_middleware.django.conf import check_settings, on_setting_changed

        check_settings()
        setting_changed.connect(on_setting_changed, dispatch_uid="pat_middleware.django.conf")
        if apps.is_installed("drf_spectacular"):
            import pat_middleware.django.spectacular  # noqa: F401 - registers the OpenAPI security scheme
