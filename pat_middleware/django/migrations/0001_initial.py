"""The token table (``pat_middleware_token``) with its indexes and the live-name constraint."""

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Token",
            fields=[
                ("id", models.CharField(max_length=12, primary_key=True, serialize=False)),
                ("user_id", models.CharField(max_length=255)),
                ("name", models.CharField(max_length=255)),
                ("description", models.TextField(blank=True, default="")),
                ("scopes", models.JSONField(default=list)),
                ("hash", models.TextField()),
                ("created_at", models.DateTimeField()),
                ("expires_at", models.DateTimeField(blank=True, null=True)),
                ("last_used_at", models.DateTimeField(blank=True, null=True)),
                ("last_used_ips", models.JSONField(default=list)),
                ("revoked_at", models.DateTimeField(blank=True, null=True)),
                ("family_id", models.CharField(max_length=12)),
                ("rotated_from", models.CharField(blank=True, max_length=12, null=True)),
                ("allowed_cidrs", models.JSONField(default=list)),
                ("resources", models.JSONField(blank=True, null=True)),
                ("changed_at", models.DateTimeField(blank=True, editable=False, null=True)),
            ],
            options={
                "verbose_name": "personal access token",
                "ordering": ("created_at", "id"),
                "indexes": [
                    models.Index(fields=["user_id"], name="pat_token_user_id"),
                    models.Index(fields=["family_id"], name="pat_token_family_id"),
                    models.Index(fields=["expires_at"], name="pat_token_expires_at"),
                    models.Index(fields=["changed_at"], name="pat_token_changed_at"),
                ],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("revoked_at__isnull", True)),
                        fields=("user_id", "name"),
                        name="pat_token_live_name",
                    )
                ],
            },
        ),
    ]
