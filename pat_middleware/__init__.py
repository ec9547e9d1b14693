"""Personal access tokens for Starlette, FastAPI and Flask, done the way GitHub and GitLab do them.

The store-, cache- and framework-specific names that need optional
dependencies (``SQLAlchemyStore``, ``RedisStore``, ``RedisCache``) are
imported on first use, so ``import pat_middleware`` needs only argon2-cffi.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pat_middleware.auth import PATAuth
from pat_middleware.core.events import Event
from pat_middleware.core.hashing import Argon2Hasher, Hasher, HMACHasher
from pat_middleware.core.manager import AsyncTokenManager, TokenManager
from pat_middleware.core.models import NewToken, Principal, TokenRecord
from pat_middleware.core.oversight import TokenFilter
from pat_middleware.core.policy import Policy
from pat_middleware.core.scopes import ScopeRules
from pat_middleware.errors import (
    AuthenticationRequired,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    NameTaken,
    PATError,
    PolicyViolation,
    StoreUnavailable,
    TokenNotFound,
    TokenRevoked,
)
from pat_middleware.stores import MemoryStore, SQLiteStore, store_from_url

if TYPE_CHECKING:
    from pat_middleware.cache.redis import RedisCache
    from pat_middleware.stores.redis import RedisStore
    from pat_middleware.stores.sqlalchemy import SQLAlchemyStore

__all__ = [
    "Argon2Hasher",
    "AsyncTokenManager",
    "AuthenticationRequired",
    "Event",
    "HMACHasher",
    "Hasher",
    "InsufficientScope",
    "InvalidRequest",
    "InvalidToken",
    "MemoryStore",
    "NameTaken",
    "NewToken",
    "PATAuth",
    "PATError",
    "Policy",
    "PolicyViolation",
    "Principal",
    "RedisCache",
    "RedisStore",
    "SQLAlchemyStore",
    "SQLiteStore",
    "ScopeRules",
    "StoreUnavailable",
    "TokenFilter",
    "TokenManager",
    "TokenNotFound",
    "TokenRecord",
    "TokenRevoked",
    "store_from_url",
]

_LAZY = {
    "RedisCache": "pat_middleware.cache.redis",
    "RedisStore": "pat_middleware.stores.redis",
    "SQLAlchemyStore": "pat_middleware.stores.sqlalchemy",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pat_middleware' has no attribute {name!r}")
