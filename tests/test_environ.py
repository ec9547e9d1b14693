"""PATAuth.from_env: the PAT_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from pat_middleware import MemoryStore, PATAuth, RedisCache, SQLiteStore
from pat_middleware.errors import InvalidToken


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    auth = PATAuth.from_env({})
    try:
        assert isinstance(auth.store, SQLiteStore)
        assert Path(auth.store.path).name == "pat_tokens.db"
        assert auth.cache is None
        assert (auth.prefix, auth.realm) == ("pat", "api")
        assert (auth.verifier.local_ttl, auth.verifier.subscribed_ttl, auth.verifier.shared_ttl) == (5.0, 300.0, 60.0)
    finally:
        auth.close()


def test_every_variable_is_applied(redis_url: str, redis_prefix: str) -> None:
    env = {
        "PAT_STORE_URL": "memory://",
        "PAT_CACHE_URL": redis_url,
        "PAT_CACHE_PREFIX": redis_prefix,
        "PAT_PREFIX": "acme",
        "PAT_REALM": "corp",
        "PAT_LOCAL_TTL": "1.5",
        "PAT_SUBSCRIBED_TTL": "30",
        "PAT_SHARED_TTL": "20",
        "PAT_TOMBSTONE_TTL": "2",
        "PAT_REDIS_TIMEOUT": "0.5",
        "PAT_HASH_WORKERS": "3",
        "PAT_REVOCATION_POLL": "2.5",
    }
    auth = PATAuth.from_env(env, realm="override")
    try:
        assert isinstance(auth.store, MemoryStore)
        assert isinstance(auth.cache, RedisCache)
        assert auth.cache.channel == redis_prefix + "invalidate"
        assert auth.cache.clients.socket_timeout == 0.5
        assert auth.prefix == "acme"
        assert auth.realm == "override"  # keyword options win over the variables
        v = auth.verifier
        assert (v.local_ttl, v.subscribed_ttl, v.shared_ttl) == (1.5, 30.0, 20.0)
        assert auth._hash_pool.workers == 3
        assert v.revocation_poll == 2.5 and auth.feed is not None and auth.feed.interval == 2.5
        token = auth.manager.create("alice", "env").token
        assert token.startswith("acme_")
        assert auth.verify(token).user_id == "alice"
    finally:
        auth.close()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PAT_LOCAL_TTL", "soon", "PAT_LOCAL_TTL must be a number of seconds .*, not 'soon'"),
        ("PAT_SHARED_TTL", "-1", "PAT_SHARED_TTL must be a number of seconds"),
        ("PAT_SUBSCRIBED_TTL", "nan", "PAT_SUBSCRIBED_TTL must be a number of seconds"),
        ("PAT_SUBSCRIBED_TTL", "inf", "PAT_SUBSCRIBED_TTL must be a number of seconds"),
        ("PAT_LOCAL_TTL", "1e400", "PAT_LOCAL_TTL must be between 0 and 86400 seconds"),
        ("PAT_LOCAL_TTL", "\u0663", "PAT_LOCAL_TTL must be a number of seconds"),  # an Arabic-Indic 3
        ("PAT_HASH_WORKERS", "0", "PAT_HASH_WORKERS must be an integer between 1 and 256, not 0"),
        ("PAT_HASH_WORKERS", "2.5", "PAT_HASH_WORKERS must be a whole number"),
        ("PAT_REVOCATION_POLL", "0", "PAT_REVOCATION_POLL must be between 0.01 and 3600 seconds"),
        ("PAT_REVOCATION_POLL", "never", "PAT_REVOCATION_POLL must be a number of seconds"),
        # Redis settings are checked even while PAT_CACHE_URL is unset
        ("PAT_TOMBSTONE_TTL", "x", "PAT_TOMBSTONE_TTL must be a number of seconds"),
        ("PAT_TOMBSTONE_TTL", "1e300", "PAT_TOMBSTONE_TTL must be between 0 and 3600 seconds"),
        ("PAT_REDIS_TIMEOUT", "garbage", "PAT_REDIS_TIMEOUT must be a number of seconds"),
        ("PAT_REDIS_TIMEOUT", "1e300", "PAT_REDIS_TIMEOUT must be between 0.01 and 60 seconds"),
        ("PAT_REALM", "\u20acuro", "realm must be printable ASCII"),
        ("PAT_REALM", "a\r\nX-Evil: 1", "realm must be printable ASCII"),
        ("PAT_PREFIX", "Not-A-Prefix", "token prefix must match"),
        ("PAT_STORE_URL", "nosuch://x", "store URL"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PATAuth.from_env({"PAT_STORE_URL": "memory://", name: value})


def test_the_revocation_feed_can_be_turned_off() -> None:
    auth = PATAuth.from_env({"PAT_STORE_URL": "memory://", "PAT_REVOCATION_POLL": "off"})
    try:
        assert auth.feed is None and auth.verifier.revocation_poll is None
    finally:
        auth.close()
    auth = PATAuth.from_env({"PAT_STORE_URL": "memory://"})
    try:
        assert auth.verifier.revocation_poll == 5.0  # on by default
    finally:
        auth.close()


KEY = "0123456789abcdef-current"
OLD = "fedcba9876543210-retired"


def test_hmac_key_selects_the_hmac_hasher() -> None:
    from pat_middleware.core.hashing import HMACHasher

    auth = PATAuth.from_env({"PAT_STORE_URL": "memory://", "PAT_HMAC_KEY": KEY, "PAT_HMAC_KEY_ID": "k2"})
    try:
        assert isinstance(auth.hasher, HMACHasher) and auth.hasher.key_id == "k2"
        new = auth.manager.create("alice", "hmac")
        assert new.record.hash.startswith("$hmac-sha256$k2$")
        assert auth.verify(new.token).user_id == "alice"
    finally:
        auth.close()


def test_old_hmac_keys_still_verify() -> None:
    from pat_middleware.core.hashing import HMACHasher

    before = PATAuth.from_env({"PAT_STORE_URL": "memory://", "PAT_HMAC_KEY": OLD, "PAT_HMAC_KEY_ID": "k1"})
    try:
        new = before.manager.create("alice", "old")
        stored = new.record.hash
    finally:
        before.close()
    env = {"PAT_HMAC_KEY": KEY, "PAT_HMAC_KEY_ID": "k2", "PAT_HMAC_OLD_KEYS": f"k1:{OLD}, k0:{'x' * 16}"}
    from pat_middleware.config import hasher_from_env

    hasher = hasher_from_env(env)
    assert isinstance(hasher, HMACHasher) and hasher.key_id == "k2"
    assert hasher.needs_rehash(stored)
    without_old = hasher_from_env({"PAT_HMAC_KEY": KEY, "PAT_HMAC_KEY_ID": "k2"})
    assert without_old is not None
    auth = PATAuth(MemoryStore(), hasher=hasher)
    try:
        auth.store.insert(new.record)
        assert auth.verify(new.token).token_id == new.record.id
    finally:
        auth.close()
    auth = PATAuth(MemoryStore(), hasher=without_old)
    try:
        auth.store.insert(new.record)
        with pytest.raises(InvalidToken) as refused:
            auth.verify(new.token)
        assert refused.value.reason == "bad_secret"
    finally:
        auth.close()


def test_without_a_key_argon2_stays() -> None:
    from pat_middleware.core.hashing import Argon2Hasher

    auth = PATAuth.from_env({"PAT_STORE_URL": "memory://", "PAT_HMAC_KEY": "  "})
    try:
        assert isinstance(auth.hasher, Argon2Hasher)
    finally:
        auth.close()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PAT_HMAC_KEY": "short"}, "PAT_HMAC_KEY is too short: use at least 16 bytes"),
        ({"PAT_HMAC_KEY_ID": "k2"}, "PAT_HMAC_KEY_ID is set but PAT_HMAC_KEY is not"),
        ({"PAT_HMAC_OLD_KEYS": f"k1:{OLD}"}, "PAT_HMAC_OLD_KEYS is set but PAT_HMAC_KEY is not"),
        ({"PAT_HMAC_KEY": KEY, "PAT_HMAC_KEY_ID": "k$2"}, "PAT_HMAC_KEY_ID: a key id is 1 to 32 of"),
        ({"PAT_HMAC_KEY": KEY, "PAT_HMAC_OLD_KEYS": OLD}, "PAT_HMAC_OLD_KEYS must be id:key pairs"),
        ({"PAT_HMAC_KEY": KEY, "PAT_HMAC_OLD_KEYS": "k0:short"}, r"PAT_HMAC_OLD_KEYS \(key k0\) is too short"),
        ({"PAT_HMAC_KEY": KEY, "PAT_HMAC_OLD_KEYS": f"k1:{OLD}"}, "key id 'k1' is given twice"),
    ],
)
def test_bad_hmac_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        PATAuth.from_env({"PAT_STORE_URL": "memory://", **env})
    assert KEY not in str(info.value) and OLD not in str(info.value)  # a key is never echoed


@pytest.mark.parametrize("prefix", ["has space:", "caf\u00e9:", "x" * 101])
def test_bad_cache_prefix_names_the_variable(prefix: str) -> None:
    with pytest.raises(ValueError, match="PAT_CACHE_PREFIX must be 1 to 100 printable ASCII characters"):
        PATAuth.from_env({"PAT_STORE_URL": "memory://", "PAT_CACHE_PREFIX": prefix})
