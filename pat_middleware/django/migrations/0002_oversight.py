"""Release 0.2 (oversight): the token table's listing indexes, the security log and the notices.

``pat_token_activity_id`` is an expression index (``COALESCE(last_used_at, created_at), id``):
Django creates it where the database has expression indexes and skips it elsewhere.
"""

from django.db import migrations, models
from django.db.models.functions import Coalesce


class Migration(migrations.Migration):
    dependencies = [("pat_middleware", "0001_initial")]

    operations = [
        migrations.AddIndex(
            model_name="token",
            index=models.Index(fields=["created_at", "id"], name="pat_token_created_id"),
        ),
        migrations.AddIndex(
            model_name="token",
            index=models.Index(Coalesce("last_used_at", "created_at"), models.F("id"), name="pat_token_activity_id"),
        ),
        migrations.CreateModel(
            name="SecurityLogEntry",
            fields=[
                ("id", models.CharField(max_length=22, primary_key=True, serialize=False)),
                ("at", models.DateTimeField()),
                ("kind", models.CharField(max_length=32)),
                ("token_id", models.CharField(blank=True, max_length=64, null=True)),
                ("user_id", models.CharField(blank=True, max_length=255, null=True)),
                ("actor", models.TextField(blank=True, null=True)),
                ("client_ip", models.CharField(blank=True, max_length=64, null=True)),
                ("reason", models.TextField(blank=True, null=True)),
                ("details", models.JSONField(default=dict)),
            ],
            options={
                "verbose_name": "security log entry",
                "verbose_name_plural": "security log",
                "ordering": ("-id",),
                "indexes": [
                    models.Index(fields=["user_id", "-id"], name="pat_log_user_newest"),
                    models.Index(fields=["token_id", "-id"], name="pat_log_token_newest"),
                    models.Index(fields=["at"], name="pat_log_at"),
                ],
            },
        ),
        migrations.CreateModel(
            name="Notice",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("token_id", models.CharField(max_length=64)),
                ("key", models.CharField(max_length=255)),
                ("until", models.DateTimeField()),
            ],
            options={
                "verbose_name": "expiry notice",
                "indexes": [models.Index(fields=["until"], name="pat_notice_until")],
                "constraints": [models.UniqueConstraint(fields=("token_id", "key"), name="pat_notice_once")],
            },
        ),
    ]
