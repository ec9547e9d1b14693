"""The Django admin pages: the tokens (list, search, filter, revoke; no hash shown) and
the security log (read-only; it holds no secret).

Tokens are read-only here: they are minted with ``manage.py pat create``, the
settings page or the API (the plaintext is shown once, there). The revoke action
goes through the token manager, so caches and other processes hear of it, and
takes the token's predecessors still in a rotation grace period along.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from pat_middleware.django.conf import get_auth
from pat_middleware.django.models import SecurityLogEntry, Token
from pat_middleware.errors import PATError

__all__ = ["SecurityLogAdmin", "TokenAdmin"]

if TYPE_CHECKING:
    TokenModelAdmin = admin.ModelAdmin[Token]
    LogModelAdmin = admin.ModelAdmin[SecurityLogEntry]
else:  # ModelAdmin is generic for type checkers only
    TokenModelAdmin = LogModelAdmin = admin.ModelAdmin

_SHOWN = (
    "id", "user_id", "name", "description", "scopes", "resources", "allowed_cidrs", "created_at", "expires_at",
    "last_used_at", "last_used_ips", "revoked_at", "family_id", "rotated_from",
)  # fmt: skip


@admin.register(Token)
class TokenAdmin(TokenModelAdmin):
    """Read-only listing of the token table with a revoke action (never the hash)."""

    list_display = ("id", "name", "user_id", "state", "scope_list", "created_at", "expires_at", "last_used_at")
    list_filter = ("revoked_at", "expires_at", "created_at")
    search_fields = ("=id", "user_id", "name")
    fields = _SHOWN
    readonly_fields = _SHOWN
    actions = ("revoke_selected",)
    ordering = ("-created_at", "id")

    @admin.display(description="state")
    def state(self, token: Token) -> str:
        now = timezone.now()
        if token.revoked_at is not None and token.revoked_at <= now:
            return "revoked"
        if token.expires_at is not None and token.expires_at <= now:
            return "expired"
        return "active" if token.revoked_at is None else "rotated"

    @admin.display(description="scopes")
    def scope_list(self, token: Token) -> str:
        return " ".join(token.scopes or ())

    @admin.action(description="Revoke the selected tokens", permissions=["change"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[Token]) -> None:
        manager = get_auth().manager
        done = 0
        for token_id in queryset.values_list("id", flat=True):
            try:
                manager.revoke(token_id)
            except PATError as exc:
                self.message_user(request, f"{token_id}: {exc.description or type(exc).__name__}", messages.ERROR)
            else:
                done += 1
        self.message_user(request, f"Revoked {done} token(s).", messages.SUCCESS)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # deleting rows would skip the caches: revoke, then `manage.py pat purge`

    def get_actions(self, request: HttpRequest) -> Any:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


_LOG_SHOWN = ("id", "at", "kind", "token_id", "user_id", "actor", "client_ip", "reason", "details")


@admin.register(SecurityLogEntry)
class SecurityLogAdmin(LogModelAdmin):
    """The security log, newest first: read-only (entries are written by the engine's log writer)."""

    list_display = ("at", "kind", "token_id", "user_id", "actor", "client_ip", "reason")
    list_filter = ("kind", "at")
    search_fields = ("=token_id", "=user_id", "=actor")
    fields = _LOG_SHOWN
    readonly_fields = _LOG_SHOWN
    ordering = ("-id",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # retention (PATAuth's log_retention) prunes it
