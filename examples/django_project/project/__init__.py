"""The example Django project (settings, urls, WSGI and ASGI applications)."""
