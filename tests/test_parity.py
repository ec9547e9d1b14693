"""Sync/async parity: the same cases through both drivers give identical results."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from pat_middleware import MemoryStore, PATAuth, PATError
from pat_middleware.core.tokens import checksum, generate
from tests.helpers import FAST_ARGON2, FakeClock


def outcome(fn: Callable[[], Any]) -> Any:
    try:
        return ("ok", normalize(fn()))
    except PATError as exc:
        return ("error", type(exc).__name__, getattr(exc, "reason", None), exc.status_code)


async def aoutcome(fn: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return ("ok", normalize(await fn()))
    except PATError as exc:
        return ("error", type(exc).__name__, getattr(exc, "reason", None), exc.status_code)


def normalize(value: Any) -> Any:
    """Drop what differs by design between two runs (random ids, plaintexts)."""
    if isinstance(value, list):
        return sorted((normalize(v) for v in value), key=repr)
    if hasattr(value, "record") and hasattr(value, "token"):
        return ("NewToken", normalize(value.record))
    if hasattr(value, "user_id") and hasattr(value, "scopes"):
        return (
            type(value).__name__,
            value.user_id,
            getattr(value, "token_name", getattr(value, "name", None)),
            tuple(sorted(value.scopes)),
            value.expires_at,
            getattr(value, "revoked_at", None),
        )
    if isinstance(value, str):
        return "<str>"
    return value


def wrong_secret(token: str) -> str:
    head = token[: -6 - 32] + "Z" * 32
    return head + checksum(head)


# Each case: setup(auth, clock) -> dict of tokens/ids, then the operation under test.
CASES: dict[str, tuple[str, Callable[[dict[str, Any]], tuple[str, tuple[Any, ...], dict[str, Any]]]]] = {
    "valid": ("verify", lambda s: ("verify", (s["token"],), {})),
    "valid again (cached)": ("verify", lambda s: ("verify", (s["token"],), {})),
    "malformed": ("verify", lambda s: ("verify", (s["token"][:-2],), {})),
    "unknown": ("verify", lambda s: ("verify", (generate()[0],), {})),
    "wrong secret": ("verify", lambda s: ("verify", (wrong_secret(s["token"]),), {})),
    "expired": ("verify", lambda s: ("verify", (s["expired"],), {})),
    "revoked": ("verify", lambda s: ("verify", (s["revoked"],), {})),
    "ip allowed": ("verify", lambda s: ("verify", (s["cidr"],), {"client_ip": "10.0.0.9"})),
    "ip refused": ("verify", lambda s: ("verify", (s["cidr"],), {"client_ip": "11.0.0.9"})),
    "create": ("manager", lambda s: ("create", ("alice", "new", ["repo"]), {"expires_in": timedelta(days=1)})),
    "create duplicate name": ("manager", lambda s: ("create", ("alice", "main"), {})),
    "create bad scope": ("manager", lambda s: ("create", ("alice", "x", ["a b"]), {})),
    "create too long": ("manager", lambda s: ("create", ("alice", "x"), {"expires_in": timedelta(days=999)})),
    "list": ("manager", lambda s: ("list", ("alice",), {})),
    "list all": ("manager", lambda s: ("list", ("alice", "all"), {})),
    "get other user": ("manager", lambda s: ("get", (s["main_id"],), {"user_id": "bob"})),
    "rename": ("manager", lambda s: ("rename", (s["main_id"], "renamed"), {})),
    "rename revoked": ("manager", lambda s: ("rename", (s["revoked_id"], "renamed"), {})),
    "update expiry": ("manager", lambda s: ("update", (s["main_id"],), {"expires_in": timedelta(days=3)})),
    "revoke": ("manager", lambda s: ("revoke", (s["main_id"],), {})),
    "rotate": ("manager", lambda s: ("rotate", (s["main_id"],), {"grace": timedelta(minutes=5)})),
    "rotate revoked (reuse)": ("manager", lambda s: ("rotate", (s["revoked_id"],), {})),
    "revoke all": ("manager", lambda s: ("revoke_all", ("alice",), {})),
    "expiring": ("manager", lambda s: ("expiring", (timedelta(days=60),), {})),
    "purge": ("manager", lambda s: ("purge", (), {})),
    "purge dry run": ("manager", lambda s: ("purge", (), {"dry_run": True})),
}


def setup() -> tuple[PATAuth, dict[str, Any]]:
    clock = FakeClock()
    auth = PATAuth(MemoryStore(), hasher=FAST_ARGON2, clock=clock, last_used_interval=3600)
    m = auth.manager
    main = m.create("alice", "main", ["repo:read"])
    expired = m.create("alice", "old", expires_in=timedelta(minutes=1))
    revoked = m.create("alice", "gone")
    cidr = m.create("alice", "office", allowed_cidrs=["10.0.0.0/8"])
    m.revoke(revoked.record.id)
    auth.verify(main.token)
    clock.advance(120)
    return auth, {
        "token": main.token,
        "main_id": main.record.id,
        "expired": expired.token,
        "revoked": revoked.token,
        "revoked_id": revoked.record.id,
        "cidr": cidr.token,
    }


@pytest.mark.parametrize("case", list(CASES))
def test_sync_and_async_drivers_agree(case: str) -> None:
    kind, build = CASES[case]

    sync_auth, state = setup()
    method, args, kwargs = build(state)
    target = sync_auth if kind == "verify" else sync_auth.manager
    sync_result = outcome(lambda: getattr(target, method)(*args, **kwargs))
    sync_auth.close()

    async_auth, state = setup()
    method, args, kwargs = build(state)

    async def run() -> Any:
        if kind == "verify":
            return await aoutcome(lambda: async_auth.averify(*args, **kwargs))
        return await aoutcome(lambda: getattr(async_auth.async_manager, method)(*args, **kwargs))

    async_result = asyncio.run(run())
    async_auth.close()
    assert sync_result == async_result
    assert sync_result[0] in ("ok", "error")
