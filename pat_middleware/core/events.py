"""Structured events for audit logs and metrics. No event ever holds a secret."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

__all__ = ["Event", "EventHook", "EventKind"]

logger = logging.getLogger("pat_middleware")

EventKind = Literal[
    "created",
    "verified",
    "failed",
    "renamed",
    "updated",
    "revoked",
    "rotated",
    "family_revoked",
    "purged",
    "new_address",
    "throttled",
    "admin_action",
]


@dataclass(frozen=True, slots=True)
class Event:
    """Something happened to a token.

    ``reason`` is set on ``failed`` (an ``InvalidToken`` reason) and on a
    ``revoked`` that was not the owner's doing (``admin``, ``inactive``).
    ``details`` holds extra non-secret facts (e.g. the new id after a rotation).
    ``actor`` says who acted when it was not the owner: ``admin:<id>`` for an
    administrator, ``sweep`` for the inactivity sweep.

    ``new_address``: the first recorded use of a token from an address its
    record did not list. ``throttled``: written by the security log, one per
    token and window, summarising refusals for throttling (``details``:
    ``count``, ``window_seconds``). ``admin_action``: one per administrator
    action (``details["action"]``: ``revoke``, ``revoke_matching``, ``sweep``).
    """

    kind: EventKind
    at: datetime
    token_id: str | None = None
    user_id: str | None = None
    reason: str | None = None
    client_ip: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    actor: str | None = None


EventHook = Callable[[Event], None]


def emit(hook: EventHook | None, event: Event, log: bool = True) -> None:
    """Log ``event`` under ``pat_middleware`` (unless ``log`` is false) and hand it to
    ``hook``; a failing hook is logged, not raised."""
    level = logging.INFO if event.kind != "verified" else logging.DEBUG
    if log and logger.isEnabledFor(level):
        logger.log(
            level,
            "token %s: %s%s",
            event.token_id or "-",
            event.kind,
            f" ({event.reason})" if event.reason else "",
            extra={"pat_event": event.kind, "pat_token_id": event.token_id, "pat_reason": event.reason},
        )
    if hook is not None:
        try:
            hook(event)
        except Exception:
            logger.exception("pat_middleware event hook failed for %s event", event.kind)
