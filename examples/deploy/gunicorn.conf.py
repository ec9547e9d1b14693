"""gunicorn settings: the example API on uvicorn workers, behind a reverse proxy.

Run from the repository root (``Procfile`` has the same line)::

    gunicorn -c examples/deploy/gunicorn.conf.py

Environment: ``PORT`` (8000), ``HOST`` (0.0.0.0), ``WEB_CONCURRENCY``
(worker processes, 2), ``FORWARDED_ALLOW_IPS`` (the proxies whose
``X-Forwarded-For`` is believed; addresses or CIDR blocks, default
``127.0.0.1,::1``), plus the ``PAT_*`` variables of ``.env.example``.
"""

import os

wsgi_app = "examples.deploy.app:app"
worker_class = "uvicorn_worker.UvicornWorker"  # pip install gunicorn uvicorn-worker
bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Each worker imports the app after the fork and builds its own PATAuth
# (database pool, Redis clients, listener thread): nothing is shared by fork.
preload_app = False
# X-Forwarded-For from these addresses sets the client address the CIDR
# allowlists of tokens are checked against (uvicorn's proxy headers, on by default).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
# Shutdown: the app's lifespan closes its PATAuth (listener, pools) within this.
graceful_timeout = 20
timeout = 30
keepalive = 5
accesslog = "-"
