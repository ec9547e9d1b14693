"""OpenTelemetry metrics, scraped as Prometheus text from the example app after real
requests: a cached hit, a cold verification against the store (argon2), refusals."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from examples.metrics_prometheus import create_metrics_app
from pat_middleware import InvalidToken, MemoryStore, PATAuth
from pat_middleware.core.tokens import generate
from pat_middleware.metrics import instrument
from tests.helpers import FAST_ARGON2


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def collected(reader: Any) -> dict[str, Any]:
    """The data points an in-memory reader collected, by instrument name."""
    return {
        metric.name: metric.data.data_points
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    }


def test_the_example_exports_verifications_argon2_and_refusals(tmp_path: Path) -> None:
    app, auth, _ = create_metrics_app(f"sqlite:///{tmp_path / 'tokens.db'}")
    assert auth.metrics
    token = auth.manager.create("alice", "ci", ["repo:read"]).token
    client = TestClient(app)
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.get("/repos", headers=bearer).status_code == 200  # cold: store + argon2
    for _ in range(3):
        assert client.get("/repos", headers=bearer).status_code == 200  # cached
    forged, _ = generate()
    assert client.get("/repos", headers={"Authorization": f"Bearer {forged}"}).status_code == 401  # unknown
    text = client.get("/metrics").text
    assert sample(text, "pat_verifications_total", outcome="accepted", path="store") == 1
    assert sample(text, "pat_verifications_total", outcome="accepted", path="local") == 3
    assert sample(text, "pat_verifications_total", outcome="refused", reason="unknown") == 1
    assert sample(text, "pat_argon2_runs_total") == 1
    assert sample(text, "pat_argon2_duration_seconds_count") == 1
    assert sample(text, "pat_store_duration_seconds_count") >= 1
    assert sample(text, "pat_local_cache_size") == 1
    assert sample(text, "pat_store_errors_total") == 0
    assert token not in text and not re.search(r"pat_[A-Za-z0-9]{40,}", text)  # no token in the export
    auth.close()


def test_refusals_are_counted_by_reason_and_throttling_apart() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    auth = PATAuth(MemoryStore(), hasher=FAST_ARGON2, failure_limit=2, meter_provider=MeterProvider([reader]))
    record = auth.manager.create("alice", "ci").record
    for _ in range(4):  # other secrets for the same key id: bad_secret twice, then throttled
        forged, _ = generate(key_id=record.id)
        with pytest.raises(InvalidToken):
            auth.verify(forged, client_ip="10.0.0.1")
    points = collected(reader)
    assert sum(p.value for p in points["pat.throttled"]) >= 1
    refused = {
        p.attributes.get("reason"): p.value
        for p in points["pat.verifications"]
        if p.attributes.get("outcome") == "refused"
    }
    assert refused.get("throttled", 0) >= 1 and refused.get("bad_secret", 0) >= 1
    auth.close()


def test_without_an_sdk_nothing_is_exported_and_nothing_breaks() -> None:
    auth = PATAuth(MemoryStore(), hasher=FAST_ARGON2)  # the API's default provider is a no-op
    token = auth.manager.create("alice", "ci").token
    assert auth.verify(token).user_id == "alice"
    assert auth.verifier.counts.store == 1
    assert instrument(auth.verifier) is True
    auth.close()


@pytest.mark.redis
def test_redis_round_trips_are_timed(redis_url: str, redis_prefix: str) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from pat_middleware.cache.redis import RedisCache

    reader = InMemoryMetricReader()
    cache = RedisCache(redis_url, prefix=redis_prefix)
    auth = PATAuth(MemoryStore(), cache=cache, hasher=FAST_ARGON2, meter_provider=MeterProvider([reader]))
    token = auth.manager.create("alice", "ci").token
    assert auth.verify(token).user_id == "alice"  # a cold verification: Redis lookup, then the store
    histograms = collected(reader)
    assert sum(p.count for p in histograms["pat.cache.duration"]) >= 1
    assert sum(p.count for p in histograms["pat.store.duration"]) >= 1
    auth.close()
