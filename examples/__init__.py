"""Runnable example apps (``uvicorn examples.starlette_app:app``)."""
