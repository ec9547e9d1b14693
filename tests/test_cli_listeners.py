"""The CLI warns when no process listens on the invalidation channel it published on
(a cache prefix that is not the app's), against the real Redis: a real app
``PATAuth`` subscribed on its own prefix, the CLI on the same or another one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pat_middleware import PATAuth, RedisCache
from pat_middleware.cli import main
from pat_middleware.errors import InvalidToken
from pat_middleware.stores import SQLiteStore


@pytest.fixture
def app(tmp_path: Path, redis_url: str, redis_prefix: str) -> Iterator[PATAuth]:
    """An app on its own cache prefix, its channel listener subscribed, the change feed off
    (so only an invalidation it hears can end its trust in a cached token)."""
    auth = PATAuth(
        SQLiteStore(tmp_path / "tokens.db"),
        cache=RedisCache(redis_url, prefix=redis_prefix + "app:"),
        revocation_poll=None,
    )
    yield auth
    auth.close()


def cli(args: list[str], store: Path) -> Result:
    result = CliRunner().invoke(main, ["--store", f"sqlite:///{store}", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def verified_and_subscribed(app: PATAuth, token: str) -> None:
    app.verify(token)  # caches it, and starts the listener
    deadline = time.monotonic() + 5
    while not (isinstance(app.cache, RedisCache) and app.cache.subscribed):
        assert time.monotonic() < deadline, "the app's listener did not subscribe"
        time.sleep(0.02)
    app.verify(token)  # cached again once subscribed: trusted for subscribed_ttl


def test_a_revoke_on_another_prefix_warns_and_names_the_listening_channel(
    app: PATAuth, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    new = app.manager.create("alice", "laptop")
    verified_and_subscribed(app, new.token)
    result = cli(
        ["--cache", redis_url, "--cache-prefix", redis_prefix + "cli:", "revoke", new.record.id], tmp_path / "tokens.db"
    )
    assert result.stdout.startswith(f"revoked {new.record.id} 'laptop' (alice)")
    warning = result.stderr
    assert f"no process listens on the invalidation channel '{redis_prefix}cli:invalidate'" in warning
    assert "--cache-prefix / PAT_CACHE_PREFIX" in warning
    assert f"'{redis_prefix}app:invalidate'" in warning  # the app's channel, among those with listeners
    assert app.verify(new.token).user_id == "alice"  # what the warning is about: the app still trusts it


def test_a_revoke_on_the_apps_prefix_is_heard_and_does_not_warn(
    app: PATAuth, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    new = app.manager.create("alice", "laptop")
    verified_and_subscribed(app, new.token)
    result = cli(
        ["--cache", redis_url, "--cache-prefix", redis_prefix + "app:", "revoke", new.record.id], tmp_path / "tokens.db"
    )
    assert "Warning" not in result.stderr, result.stderr
    deadline = time.monotonic() + 2
    while True:  # heard: the app refuses the token at once (well within its feed-less TTLs)
        try:
            app.verify(new.token)
        except InvalidToken as exc:
            assert exc.reason == "revoked"
            break
        assert time.monotonic() < deadline, "the app did not hear the invalidation"
        time.sleep(0.02)


def test_commands_that_invalidate_nothing_do_not_ask(tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    store = tmp_path / "tokens.db"
    cli(["create", "alice", "x"], store)
    args = ["--cache", redis_url, "--cache-prefix", redis_prefix + "none:"]
    assert "Warning" not in cli([*args, "list", "alice"], store).stderr
    assert "Warning" not in cli([*args, "revoke-all", "nobody", "--yes"], store).stderr
    assert "no process listens" in cli([*args, "revoke-all", "alice", "--yes"], store).stderr


def test_on_a_cluster_the_listeners_of_every_node_count(tmp_path: Path) -> None:
    """The app's listener subscribes on one node; PUBSUB NUMSUB is per node: the CLI sums them all."""
    from redis_topologies import running_cluster

    for cluster in running_cluster():
        app = PATAuth(
            SQLiteStore(tmp_path / "tokens.db"),
            cache=RedisCache(cluster.url, prefix="app:"),
            revocation_poll=None,
        )
        try:
            new = app.manager.create("alice", "laptop")
            verified_and_subscribed(app, new.token)
            assert sum(cluster.subscribers("app:invalidate").values()) == 1
            store = tmp_path / "tokens.db"
            other = cli(["--cache", cluster.url, "--cache-prefix", "cli:", "revoke", new.record.id], store)
            assert "no process listens on the invalidation channel 'cli:invalidate'" in other.stderr
            assert "Channels with listeners: 'app:invalidate'" in other.stderr
            same = cli(["--cache", cluster.url, "--cache-prefix", "app:", "revoke", new.record.id], store)
            assert "Warning" not in same.stderr, same.stderr
        finally:
            app.close()
