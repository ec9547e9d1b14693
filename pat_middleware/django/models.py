"""The app's tables: ``pat_middleware_token`` (one row per token, never the plaintext),
``pat_middleware_securitylogentry`` (the security log) and ``pat_middleware_notice``
(the expiry notices already sent).

Read and write it through :class:`~pat_middleware.django.store.DjangoStore` (or
``get_auth().manager``), not the ORM directly: the store keeps the rules that
must be atomic (revocations take a token's predecessors along, the live-name
rule) and stamps ``changed_at``, which the revocation feed reads.
"""

from __future__ import annotations

from datetime import datetime

from django.db import models
from django.db.models.functions import Coalesce

__all__ = ["Notice", "SecurityLogEntry", "Token"]


class Token(models.Model):
    """A personal access token's record (see :class:`pat_middleware.core.models.TokenRecord`)."""

    id: models.CharField[str, str] = models.CharField(primary_key=True, max_length=12)
    user_id: models.CharField[str, str] = models.CharField(max_length=255)
    name: models.CharField[str, str] = models.CharField(max_length=255)
    description: models.TextField[str, str] = models.TextField(default="", blank=True)
    scopes = models.JSONField(default=list)
    hash: models.TextField[str, str] = models.TextField()
    created_at: models.DateTimeField[datetime, datetime] = models.DateTimeField()
    expires_at: models.DateTimeField[datetime | None, datetime | None] = models.DateTimeField(null=True, blank=True)
    last_used_at: models.DateTimeField[datetime | None, datetime | None] = models.DateTimeField(null=True, blank=True)
    last_used_ips = models.JSONField(default=list)
    revoked_at: models.DateTimeField[datetime | None, datetime | None] = models.DateTimeField(null=True, blank=True)
    family_id: models.CharField[str, str] = models.CharField(max_length=12)
    rotated_from: models.CharField[str | None, str | None] = models.CharField(max_length=12, null=True, blank=True)
    allowed_cidrs = models.JSONField(default=list)
    #: NULL: every resource; else a JSON array of resource ids.
    resources = models.JSONField(null=True, blank=True)
    #: When the token's validity last changed (the revocation feed), the database's clock.
    changed_at: models.DateTimeField[datetime | None, datetime | None] = models.DateTimeField(
        null=True, blank=True, editable=False
    )

    class Meta:
        verbose_name = "personal access token"
        ordering = ("created_at", "id")
        indexes = (
            models.Index(fields=["user_id"], name="pat_token_user_id"),
            models.Index(fields=["family_id"], name="pat_token_family_id"),
            models.Index(fields=["expires_at"], name="pat_token_expires_at"),
            models.Index(fields=["changed_at"], name="pat_token_changed_at"),
            # administration listings (``search``): by creation, and by activity where the
            # database has expression indexes (Django skips it elsewhere)
            models.Index(fields=["created_at", "id"], name="pat_token_created_id"),
            models.Index(Coalesce("last_used_at", "created_at"), "id", name="pat_token_activity_id"),
        )
        constraints = (
            models.UniqueConstraint(
                fields=["user_id", "name"], condition=models.Q(revoked_at__isnull=True), name="pat_token_live_name"
            ),
        )

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class SecurityLogEntry(models.Model):
    """One security-log entry (see :class:`pat_middleware.core.audit.LogEntry`); no secret is ever in it.

    ``id`` sorts as the entries' moments do: newest first is ``-id``.
    """

    id: models.CharField[str, str] = models.CharField(primary_key=True, max_length=22)
    at: models.DateTimeField[datetime, datetime] = models.DateTimeField()
    kind: models.CharField[str, str] = models.CharField(max_length=32)
    token_id: models.CharField[str | None, str | None] = models.CharField(max_length=64, null=True, blank=True)
    user_id: models.CharField[str | None, str | None] = models.CharField(max_length=255, null=True, blank=True)
    actor: models.TextField[str | None, str | None] = models.TextField(null=True, blank=True)
    client_ip: models.CharField[str | None, str | None] = models.CharField(max_length=64, null=True, blank=True)
    reason: models.TextField[str | None, str | None] = models.TextField(null=True, blank=True)
    details = models.JSONField(default=dict)

    class Meta:
        verbose_name = "security log entry"
        verbose_name_plural = "security log"
        ordering = ("-id",)
        indexes = (
            models.Index(fields=["user_id", "-id"], name="pat_log_user_newest"),
            models.Index(fields=["token_id", "-id"], name="pat_log_token_newest"),
            models.Index(fields=["at"], name="pat_log_at"),
        )

    def __str__(self) -> str:
        return f"{self.kind} {self.token_id or '-'} ({self.id})"


class Notice(models.Model):
    """A notice already sent (``claim_notice``): ``key`` about ``token_id``, remembered until ``until``."""

    token_id: models.CharField[str, str] = models.CharField(max_length=64)
    key: models.CharField[str, str] = models.CharField(max_length=255)
    until: models.DateTimeField[datetime, datetime] = models.DateTimeField()

    class Meta:
        verbose_name = "expiry notice"
        indexes = (models.Index(fields=["until"], name="pat_notice_until"),)
        constraints = (models.UniqueConstraint(fields=["token_id", "key"], name="pat_notice_once"),)

    def __str__(self) -> str:
        return f"{self.key} ({self.token_id})"
