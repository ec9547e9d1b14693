"""Self-service token management, framework-neutral: the REST API's rules, the
request shapes declared once, the OpenAPI document and the settings page (Jinja2
templates in ``templates/``). The mounts are in :mod:`pat_middleware.starlette`
and :mod:`pat_middleware.flask`."""
