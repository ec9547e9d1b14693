"""Token metrics as Prometheus text: the Starlette example with ``GET /metrics``.

    pip install "pat-middleware[starlette,metrics]" opentelemetry-sdk opentelemetry-exporter-prometheus
    uvicorn --factory examples.metrics_prometheus:app_from_env

The OpenTelemetry SDK's meter provider, read by the Prometheus exporter, is
given to ``PATAuth(meter_provider=...)``; ``GET /metrics`` serves the
``prometheus_client`` registry the exporter fills (``pat_verifications_total``,
``pat_argon2_duration_seconds``...). Any other OpenTelemetry exporter (OTLP to a
collector) works the same way.
"""

from __future__ import annotations

import os

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from examples.starlette_app import create_app
from pat_middleware import PATAuth


def create_metrics_app(auth_url: str | None = None) -> tuple[Starlette, PATAuth, CollectorRegistry]:
    """The example app with ``/metrics``; its own registry, so several can live in one process."""
    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    store_url = auth_url or os.environ.get("PAT_STORE_URL") or "sqlite:///pat_tokens.db"
    auth = PATAuth.from_url(store_url, os.environ.get("PAT_CACHE_URL"), meter_provider=provider)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return create_app(auth, extra_routes=[Route("/metrics", metrics)]), auth, registry


def app_from_env() -> Starlette:
    """For ``uvicorn --factory``: the store and cache from ``PAT_STORE_URL`` / ``PAT_CACHE_URL``."""
    return create_metrics_app()[0]
