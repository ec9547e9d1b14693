"""The admin test app for a real server (``uvicorn tests.admin_server_app:app``): the
self-service API at /api (session user from ``X-User``), the admin API at /admin
(``admin`` scope, or ``X-Admin: yes``), ``/whoami``; tokens in ``PAT_STORE_URL``."""

from __future__ import annotations

from pat_middleware import PATAuth
from tests.helpers import FAST_ARGON2
from tests.management_apps import starlette_admin

app = starlette_admin(PATAuth.from_env(hasher=FAST_ARGON2))
