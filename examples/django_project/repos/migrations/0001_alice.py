"""The demo user ``alice`` (password ``alice``), primary key 1 in a fresh database."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.hashers import make_password
from django.db import migrations


def add_alice(apps: Any, schema_editor: Any) -> None:
    user = apps.get_model("auth", "User")
    user.objects.get_or_create(
        username="alice", defaults={"password": make_password("alice"), "is_staff": True, "is_superuser": True}
    )


class Migration(migrations.Migration):
    dependencies = [("auth", "0012_alter_user_first_name_max_length")]
    operations = [migrations.RunPython(add_alice, migrations.RunPython.noop)]
