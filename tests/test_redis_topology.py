"""Cache URLs for one server, Sentinel and Cluster (no server needed): parsing,
errors, and that ``PATAuth.from_url``, ``PATAuth.from_env`` and the
constructors take them without connecting anywhere. The topologies
themselves run in test_redis_sentinel.py and test_redis_cluster.py."""

from __future__ import annotations

import time

import pytest

from pat_middleware import PATAuth
from pat_middleware.cache.redis import RedisCache
from pat_middleware.redis.clients import SingleServer
from pat_middleware.redis.topology import ClusterTopology, SentinelTopology, topology_from_url


def test_plain_urls_stay_with_redis_py() -> None:
    for url in ("redis://localhost:6379/0", "rediss://h:6380/1", "unix:///tmp/redis.sock"):
        topology = topology_from_url(url)
        assert isinstance(topology, SingleServer) and topology.url == url


def test_sentinel_url() -> None:
    topology = topology_from_url(
        "redis+sentinel://app:s%40cret@10.0.0.1:26379,10.0.0.2,[::1]:26380/mymaster/2"
        "?sentinel_password=pw&sentinel_username=sent"
    )
    assert isinstance(topology, SentinelTopology)
    assert topology.sentinels == [("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380)]
    assert (topology.service, topology.db) == ("mymaster", 2)
    assert (topology.credentials.username, topology.credentials.password) == ("app", "s@cret")
    assert (topology.sentinel_credentials.username, topology.sentinel_credentials.password) == ("sent", "pw")
    assert not topology.cluster and not topology.credentials.ssl
    assert "s@cret" not in repr(topology) and "pw" not in repr(topology)

    plain = topology_from_url("redis+sentinel://h/svc")
    assert isinstance(plain, SentinelTopology)
    assert (plain.sentinels, plain.service, plain.db) == ([("h", 26379)], "svc", 0)
    assert plain.credentials.password is None and plain.sentinel_credentials.password is None
    tls = topology_from_url("rediss+sentinel://:pw@h:1/svc")
    assert isinstance(tls, SentinelTopology)
    assert tls.credentials.ssl and tls.sentinel_credentials.ssl and tls.credentials.password == "pw"


def test_cluster_url() -> None:
    for url in (
        "redis+cluster://a:7000,b:7001,c",
        "redis+cluster://a:7000,b:7001,c/",
        "redis+cluster://a:7000,b:7001,c/0",
    ):
        topology = topology_from_url(url)
        assert isinstance(topology, ClusterTopology) and topology.cluster
        assert topology.nodes == [("a", 7000), ("b", 7001), ("c", 6379)]
    tls = topology_from_url("rediss+cluster://user:pw@a")
    assert isinstance(tls, ClusterTopology)
    assert (tls.credentials.username, tls.credentials.password, tls.credentials.ssl) == ("user", "pw", True)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://h:26379", "service name"),
        ("redis+sentinel://h:26379/svc/0/extra", "service name"),
        ("redis+sentinel://h:26379/svc/x", "database number"),
        ("redis+sentinel:///svc", "names no host"),
        ("redis+sentinel://h:port/svc", "bad port"),
        ("redis+sentinel://h/svc?socket_timeout=1", "unsupported"),
        ("redis+cluster://a:7000/1", "database 0"),
        ("redis+cluster://a:7000?sentinel_password=x", "unsupported"),
        ("redis+cluster://", "names no host"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        topology_from_url(url)


def test_from_url_and_environment_take_the_new_urls_without_connecting() -> None:
    """Nothing listens on port 1: building connects nowhere, and verification
    falls back to the store (the cache reports itself unavailable)."""
    for cache_url, kind in (
        ("redis+sentinel://127.0.0.1:1/mymaster/0", SentinelTopology),
        ("redis+cluster://127.0.0.1:1", ClusterTopology),
    ):
        started = time.monotonic()
        auth = PATAuth.from_url("memory://", cache_url)
        env_auth = PATAuth.from_env({"PAT_STORE_URL": "memory://", "PAT_CACHE_URL": cache_url})
        assert time.monotonic() - started < 0.5
        try:
            for each in (auth, env_auth):
                assert isinstance(each.cache, RedisCache)
                assert isinstance(each.cache.clients.topology, kind)
            new = auth.manager.create("alice", "ci", ["repo:read"])
            auth.verifier.local.clear()
            assert auth.verify(new.token).token_id == new.record.id  # from the store
            assert not auth.cache.subscribed  # type: ignore[union-attr]
        finally:
            auth.close()
            env_auth.close()


def test_constructors() -> None:
    sentinel = RedisCache.from_sentinel([("127.0.0.1", 1)], "svc", db=3, password="pw", prefix="x:")
    cluster = RedisCache.from_cluster([("127.0.0.1", 1), ("127.0.0.1", 2)], prefix="y:")
    try:
        assert isinstance(sentinel.clients.topology, SentinelTopology)
        assert (sentinel.clients.topology.db, sentinel.channel) == (3, "x:invalidate")
        assert isinstance(cluster.clients.topology, ClusterTopology)
        assert cluster.clients.topology.nodes == [("127.0.0.1", 1), ("127.0.0.1", 2)]
        with pytest.raises(ValueError):
            RedisCache.from_sentinel([], "svc")
        with pytest.raises(ValueError):
            RedisCache.from_cluster([])
    finally:
        sentinel.close()
        cluster.close()
