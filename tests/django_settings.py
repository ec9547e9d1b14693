"""Django settings for the Django tests (pytest-django reads them: ``DJANGO_SETTINGS_MODULE``
in pyproject.toml). They only configure Django: tests that use no Django fixture are untouched.

Databases: ``default`` is a SQLite file in a temporary directory; ``postgres`` is a fresh
database on the server at ``PAT_TEST_POSTGRES_URL``, created for the session and dropped
after it (only when the server answers, or always under ``CI=true``, where the tests
that need it must fail rather than skip).
"""

from __future__ import annotations

import os
import socket
import tempfile
import uuid
from urllib.parse import urlsplit

from tests.helpers import FAST_ARGON2

POSTGRES_URL = os.environ.get("PAT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
_RUN = uuid.uuid4().hex[:10]
_DIR = tempfile.mkdtemp(prefix="pat-django-")


def _postgres_answers() -> bool:
    parts = urlsplit(POSTGRES_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 1.0):
            return True
    except OSError:
        return False


SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.django_urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "pat_middleware.django",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "pat_middleware.django.middleware.PATMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(_DIR, "db.sqlite3"),
        # several threads write (the last-used writes, the contract's races): take the lock up front
        "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
        "TEST": {"NAME": os.path.join(_DIR, "test.sqlite3")},
    }
}
if IN_CI or _postgres_answers():
    _pg = urlsplit(POSTGRES_URL)
    DATABASES["postgres"] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _pg.path.lstrip("/") or "test",
        "USER": _pg.username or "postgres",
        "PASSWORD": _pg.password or "",
        "HOST": _pg.hostname or "127.0.0.1",
        "PORT": str(_pg.port or 5432),
        "TEST": {"NAME": f"pat_test_django_{_RUN}"},
    }
REST_FRAMEWORK = {
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
PAT = {"REALM": "example", "HASHER": FAST_ARGON2, "AVAILABLE_SCOPES": ["repo:read", "repo:write"]}
