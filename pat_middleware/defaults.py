"""The defaults every entry point shares (``PATAuth``, ``PAT_*`` settings, Flask config, the CLI)."""

from __future__ import annotations

from pat_middleware.tokens import DEFAULT_PREFIX

__all__ = ["CACHE_PREFIX", "REALM", "REVOCATION_POLL", "STORE_FILE", "STORE_URL", "TOKEN_PREFIX"]

#: The token store's file name, and its URL (relative to the working directory).
STORE_FILE = "pat_tokens.db"
STORE_URL = f"sqlite:///{STORE_FILE}"
#: Redis key prefix and invalidation channel namespace: processes that must hear
#: each other's revocations share it.
CACHE_PREFIX = "pat:"
#: The ``realm`` of ``WWW-Authenticate`` challenges.
REALM = "api"
#: The token prefix (``pat_...``), as GitHub's ``ghp_``.
TOKEN_PREFIX = DEFAULT_PREFIX
#: Seconds between two polls of the store's change feed.
REVOCATION_POLL = 5.0
