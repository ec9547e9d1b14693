"""Health and readiness: ``PATAuth.health()``/``ahealth()``, the Starlette and Flask
endpoints, and the store outage logged once with its cause and once when it ends.
Real stores and a real Redis; an outage is a real one (a store whose directory
is missing, a Redis port nobody listens on, a PostgreSQL port that refuses)."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest
from flask import Flask
from starlette.applications import Starlette
from starlette.testclient import TestClient

from pat_middleware import InvalidToken, MemoryStore, PATAuth, SQLiteStore, StoreUnavailable
from pat_middleware.flask import PAT
from pat_middleware.flask_api import health_blueprint
from pat_middleware.health import PROBE_ID
from pat_middleware.redis_cache import RedisCache
from pat_middleware.starlette_api import health_route
from pat_middleware.tokens import generate
from tests.helpers import FAST_ARGON2


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed when the block ends: nobody listens


def test_a_reachable_store_without_cache_is_ready() -> None:
    auth = PATAuth(MemoryStore(), hasher=FAST_ARGON2)
    health = auth.health()
    assert health.ready and health.store.ok and health.store.error is None
    assert health.store.latency_ms >= 0
    assert health.cache is None and health.subscribed is None
    assert health.to_dict()["status"] == "ok"
    auth.close()


def test_an_unreachable_store_is_not_ready_and_says_why(tmp_path: Path) -> None:
    auth = PATAuth(SQLiteStore(tmp_path / "missing-dir" / "tokens.db"), hasher=FAST_ARGON2)
    health = auth.health()
    assert not health.ready and not health.store.ok
    assert health.store.error is not None and health.store.error.startswith("OperationalError: unable to open")
    assert health.to_dict()["status"] == "unavailable"
    asyncio.run(_check_async_agrees(auth))
    auth.close()


async def _check_async_agrees(auth: PATAuth) -> None:
    health = await auth.ahealth()
    assert not health.ready and health.store.error is not None


@pytest.mark.postgres
def test_postgresql_refusing_connections_is_not_ready() -> None:
    auth = PATAuth.from_url(f"postgresql://postgres@127.0.0.1:{_closed_port()}/test")
    health = auth.health()
    assert not health.ready
    assert health.store.error is not None and "OperationalError" in health.store.error
    auth.close()


@pytest.mark.redis
def test_the_cache_is_reported_not_required(redis_url: str, redis_prefix: str) -> None:
    auth = PATAuth(MemoryStore(), cache=RedisCache(redis_url, prefix=redis_prefix), hasher=FAST_ARGON2)
    health = auth.health()
    assert health.ready and health.cache is not None and health.cache.ok
    assert health.subscribed is False  # the channel starts with the first cold verification
    auth.close()
    down = PATAuth(
        MemoryStore(),
        cache=RedisCache(f"redis://127.0.0.1:{_closed_port()}/0", prefix=redis_prefix),
        hasher=FAST_ARGON2,
    )
    health = down.health()
    assert health.ready  # the store answers: still ready
    assert health.cache is not None and not health.cache.ok and health.cache.error
    down.close()


def test_a_store_outage_is_logged_once_with_its_cause_and_once_when_it_ends(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "created-later"
    auth = PATAuth(SQLiteStore(folder / "tokens.db"), hasher=FAST_ARGON2)
    token, _ = generate()
    with caplog.at_level(logging.WARNING, logger="pat_middleware"):
        for _ in range(5):
            with pytest.raises(StoreUnavailable):
                auth.verify(token)
        folder.mkdir()
        for _ in range(3):
            with pytest.raises(InvalidToken):  # the store answers again: an unknown token
                auth.verify(token)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("token store")]
    assert len(lines) == 2, lines
    assert lines[0].startswith("token store unavailable: OperationalError: unable to open database file")
    assert lines[1].startswith("token store reachable again after ")
    assert token not in caplog.text
    auth.close()


def test_the_probe_is_no_token_id() -> None:
    assert not PROBE_ID.isalnum()  # key ids are base62: no record can have it


def test_starlette_live_and_ready(tmp_path: Path) -> None:
    good = PATAuth(MemoryStore(), hasher=FAST_ARGON2)
    bad = PATAuth(SQLiteStore(tmp_path / "missing" / "t.db"), hasher=FAST_ARGON2)
    app = Starlette(routes=[health_route(good), health_route(bad, "/down")])
    client = TestClient(app)
    live = client.get("/health/live")
    assert live.status_code == 200 and live.json() == {"status": "ok"}
    assert live.headers["cache-control"] == "no-store"
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ok" and ready.json()["store"]["ok"] is True
    down = client.get("/down/ready")
    assert down.status_code == 503 and down.json()["status"] == "unavailable"
    assert "unable to open" in down.json()["store"]["error"]
    assert client.get("/down/live").status_code == 200  # alive, just not ready
    good.close()
    bad.close()


def test_flask_live_and_ready(tmp_path: Path) -> None:
    app = Flask(__name__)
    app.config["PAT_STORE_URL"] = f"sqlite:///{tmp_path / 'missing' / 't.db'}"
    PAT(app)
    app.register_blueprint(health_blueprint())
    other = PATAuth(MemoryStore(), hasher=FAST_ARGON2)
    app.register_blueprint(health_blueprint(other, url_prefix="/other", name="other_health"))
    client = app.test_client()
    assert client.get("/health/live").json == {"status": "ok"}
    down = client.get("/health/ready")
    assert down.status_code == 503 and down.json["status"] == "unavailable"
    assert down.headers["Cache-Control"] == "no-store"
    (tmp_path / "missing").mkdir()
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json["store"]["ok"] is True
    assert client.get("/other/ready").status_code == 200
    app.extensions["pat"].auth.close()
    other.close()


def test_the_examples_serve_readiness(tmp_path: Path) -> None:
    from examples.flask_app import create_app as create_flask_app
    from examples.starlette_app import create_app

    auth = PATAuth.from_url(f"sqlite:///{tmp_path / 'example.db'}")
    client = TestClient(create_app(auth))  # no lifespan: the test closes auth
    assert client.get("/health/ready").json()["status"] == "ok"
    assert client.get("/health").status_code == 200
    auth.close()
    flask_app = create_flask_app({"PAT_STORE_URL": f"sqlite:///{tmp_path / 'flask.db'}"})
    assert flask_app.test_client().get("/health/ready").json["status"] == "ok"
    flask_app.extensions["pat"].auth.close()
