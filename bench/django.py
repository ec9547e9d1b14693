"""What token authentication costs per request in Django, against a bare Django view.

Run: ``python bench/django.py`` (in-process), ``python bench/django.py --server``
(gunicorn + wrk; needs ``wrk``). Four cases, timed interleaved in one run (each
round times every case once; medians of the rounds are printed):

* ``bare``: a plain Django view returning a small text response, no middleware;
* ``pat``: the same view under ``@scopes_required("repo:read")`` behind
  ``PATMiddleware``, with a valid, cached token (the hot path: no I/O);
* ``drf``: a DRF ``APIView`` with DRF's own ``TokenAuthentication`` and
  ``IsAuthenticated`` (one database query per request);
* ``knox``: the same ``APIView`` with django-rest-knox's ``TokenAuthentication``
  (a query and a SHA-512 per request);
* ``pat-drf``: the same ``APIView`` with ``PATAuthentication`` and ``HasScopes``
  (no ``PATMiddleware``): the token from the cache, the user from the database,
  as DRF's ``TokenAuthentication`` loads it.

Every case sends ``Authorization: Bearer <token>`` (DRF's and knox's keyword is set to
``Bearer``). SQLite in a temporary directory, persistent connections
(``CONN_MAX_AGE=None``), no other middleware. In-process, the WSGI handler is called
directly (a fresh environ per request, as a server builds one): the layers' own
cost. With ``--server``, one gunicorn process (one sync worker) per case, all up at
once, loaded by ``wrk -t1`` one at a time in shuffled rounds; req/s and the
worker's CPU per request from ``/proc``. Target (issue 16): PAT at most DRF
``TokenAuthentication``'s cost.

This file is also the benchmark's Django project: ``gunicorn bench.django:application``
with ``PAT_BENCH_DJANGO_DB`` and ``PAT_BENCH_CASE`` set.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

# Run as a script, this file's folder comes first on sys.path, and this file is "django":
# take the folder off while Django is imported, then put it back (for report.py and server.py).
_HERE = str(Path(__file__).resolve().parent)
_SHADOWING = [p for p in sys.path if str(Path(p or ".").resolve()) == _HERE]
sys.path[:] = [p for p in sys.path if p not in _SHADOWING]
sys.modules.pop("django", None)
import django  # noqa: E402
from django.conf import settings  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

sys.path.append(_HERE)

CASES = {
    "bare": "bare Django view",
    "pat": "PATMiddleware + scopes_required, cached token",
    "drf": "DRF TokenAuthentication (APIView)",
    "knox": "knox TokenAuthentication (APIView)",
    "pat-drf": "PATAuthentication + HasScopes (APIView)",
}
PAT_MIDDLEWARE = "pat_middleware.django.middleware.PATMiddleware"
#: The project's URLs (this module is its ROOT_URLCONF), filled by :func:`configure`.
urlpatterns: list[Any] = []


def configure(db_path: str, middleware: list[str]) -> None:
    """Configure and set up Django for the benchmark (once per process)."""
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-only",
        ALLOWED_HOSTS=["*"],
        USE_TZ=True,
        ROOT_URLCONF=__name__,
        MIDDLEWARE=middleware,
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "rest_framework",
            "rest_framework.authtoken",
            "knox",
            "pat_middleware.django",
        ],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": db_path,
                "CONN_MAX_AGE": None,
                "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
            }
        },
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        REST_FRAMEWORK={"UNAUTHENTICATED_USER": None},
        REST_KNOX={"AUTH_HEADER_PREFIX": "Bearer"},
        PAT={"REVOCATION_POLL": None},
        LOGGING_CONFIG=None,
    )
    django.setup()
    urlpatterns[:] = [path(name, view) for name, view in _views().items()]


# -- the project: views and URLs (imported by Django as ROOT_URLCONF) --------------------------
def bare_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")


def _views() -> dict[str, Callable[..., Any]]:
    from knox.auth import TokenAuthentication as KnoxAuthentication
    from rest_framework.authentication import TokenAuthentication
    from rest_framework.permissions import IsAuthenticated
    from rest_framework.renderers import BaseRenderer
    from rest_framework.response import Response
    from rest_framework.views import APIView

    from pat_middleware.django import scopes_required
    from pat_middleware.django.rest_framework import HasScopes, PATAuthentication

    class Text(BaseRenderer):
        media_type = "text/plain"
        format = "txt"

        def render(self, data: Any, accepted_media_type: Any = None, renderer_context: Any = None) -> bytes:
            return str(data).encode()

    class BearerToken(TokenAuthentication):
        keyword = "Bearer"

    class DRFView(APIView):
        authentication_classes = [BearerToken]
        permission_classes = [IsAuthenticated]
        renderer_classes = [Text]

        def get(self, request: Any) -> Response:
            return Response("ok")

    class KnoxView(DRFView):
        authentication_classes = [KnoxAuthentication]

    class PATView(DRFView):
        authentication_classes = [PATAuthentication]
        permission_classes = [HasScopes]
        required_scopes = ["repo:read"]

    return {
        "bare": bare_view,
        "pat": scopes_required("repo:read")(bare_view),
        "drf": DRFView.as_view(),
        "knox": KnoxView.as_view(),
        "pat-drf": PATView.as_view(),
    }


# -- tokens ----------------------------------------------------------------------------------------
def mint() -> dict[str, str]:
    """Migrate, create the user and one token per case (the bare case's is ignored)."""
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from knox.models import AuthToken
    from rest_framework.authtoken.models import Token

    from pat_middleware.django import get_auth

    call_command("migrate", verbosity=0)
    user = User.objects.create_user("bench")
    pat = get_auth().manager.create(str(user.pk), "bench", ["repo:read"], expires_in=timedelta(days=1)).token
    drf = Token.objects.create(user=user).key
    knox = AuthToken.objects.create(user)[1]
    return {"bare": pat, "pat": pat, "drf": drf, "knox": knox, "pat-drf": pat}


# -- in process ----------------------------------------------------------------------------------
def environ_for(case: str, token: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": f"/{case}",
        "QUERY_STRING": "",
        "SCRIPT_NAME": "",
        "SERVER_NAME": "api.example.com",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "api.example.com",
        "HTTP_AUTHORIZATION": f"Bearer {token}",
        "HTTP_USER_AGENT": "bench/1.0",
        "HTTP_ACCEPT": "*/*",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
    }


def per_request_us(handler: Any, template: dict[str, Any], n: int) -> float:
    statuses: set[str] = set()

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        statuses.add(status)
        return lambda data: None

    start = time.thread_time()
    for _ in range(n):
        environ = dict(template)
        environ["wsgi.input"] = io.BytesIO(b"")
        body = handler(environ, start_response)
        for _chunk in body:
            pass
        body.close()
    elapsed = time.thread_time() - start
    if statuses != {"200 OK"}:
        raise SystemExit(f"{template['PATH_INFO']}: unexpected statuses {statuses}")
    return elapsed / n * 1e6


def in_process(rounds: int, n: int) -> None:
    from django.core.handlers.wsgi import WSGIHandler
    from report import print_ratios

    with tempfile.TemporaryDirectory() as tmp:
        configure(str(Path(tmp) / "bench.sqlite3"), [])
        tokens = mint()
        handlers = {}
        for case in CASES:
            settings.MIDDLEWARE = [PAT_MIDDLEWARE] if case == "pat" else []
            handlers[case] = WSGIHandler()  # loads MIDDLEWARE now
        templates = {case: environ_for(case, tokens[case]) for case in CASES}
        for case in CASES:  # warm up: first-request setup, the cold verification, caches
            per_request_us(handlers[case], templates[case], 200)
        samples: dict[str, list[float]] = {CASES[c]: [] for c in CASES}
        for _ in range(rounds):
            for case in CASES:
                samples[CASES[case]].append(per_request_us(handlers[case], templates[case], n))
    print(f"in process, WSGIHandler called directly, {rounds} rounds of {n} requests per case (medians)")
    print_ratios(samples, CASES["bare"], label="case", unit="µs/request", ratio="x bare")


# -- under gunicorn ----------------------------------------------------------------------------------
def under_server(rounds: int, seconds: int, connections: int) -> None:
    from server import ROOT, cpu_seconds, free_port, load, server

    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        db = str(Path(tmp) / "bench.sqlite3")
        configure(db, [])
        tokens = mint()
        running: dict[str, tuple[int, str]] = {}
        for case in CASES:
            port = free_port()
            env = {**os.environ, "PYTHONPATH": str(ROOT), "PAT_BENCH_DJANGO_DB": db, "PAT_BENCH_CASE": case}
            command = [sys.executable, "-m", "gunicorn", "bench.django:application", f"--bind=127.0.0.1:{port}"]
            command += ["--workers=1", "--worker-class=sync", "--log-level=warning"]
            master = stack.enter_context(server(command, env, port))
            running[case] = (_worker(master), f"http://127.0.0.1:{port}/{case}")
        for case, (_, url) in running.items():  # warm up
            load(url, tokens[case], 1, connections)
        samples: dict[str, list[tuple[float, float]]] = {case: [] for case in CASES}
        for _ in range(rounds):
            order = list(CASES)
            random.shuffle(order)
            for case in order:
                pid, url = running[case]
                before = cpu_seconds(pid)
                rps, total = load(url, tokens[case], seconds, connections)
                samples[case].append((rps, (cpu_seconds(pid) - before) / total * 1e6))
    print(f"gunicorn, 1 sync worker per case, wrk -t1 -c{connections}, {rounds} rounds of {seconds} s (medians)")
    base_rps = statistics.median(s[0] for s in samples["bare"])
    base_cpu = statistics.median(s[1] for s in samples["bare"])
    width = max(len(v) for v in CASES.values()) + 2
    print(f"{'case':{width}} {'req/s':>9} {'x bare':>7} {'CPU µs/req':>11} {'x bare':>7}")
    for case, label in CASES.items():
        rps = statistics.median(s[0] for s in samples[case])
        cpu = statistics.median(s[1] for s in samples[case])
        print(f"{label:{width}} {rps:9.0f} {rps / base_rps:7.3f} {cpu:11.1f} {cpu / base_cpu:7.3f}")


def _worker(master: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    raise SystemExit("gunicorn started no worker")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--server", action="store_true", help="gunicorn + wrk instead of in-process")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--requests", type=int, default=3000, help="in-process: requests per case per round")
    parser.add_argument("--seconds", type=int, default=3, help="--server: length of one wrk run")
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    if args.server:
        under_server(args.rounds or 5, args.seconds, args.connections)
    else:
        in_process(args.rounds or 15, args.requests)


if os.environ.get("PAT_BENCH_CASE") and not settings.configured:  # imported by gunicorn: this is the project
    configure(os.environ["PAT_BENCH_DJANGO_DB"], [PAT_MIDDLEWARE] if os.environ["PAT_BENCH_CASE"] == "pat" else [])
    from django.core.wsgi import get_wsgi_application

    application = get_wsgi_application()

if __name__ == "__main__":
    main()
