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
    "created", "verified", "failed", "renamed", "updated", "revoked", "rotated", "family_revoked", "purged"
]


@dataclass(frozen=True, slots=True)
class Event:
    """Something happened to a token.

    ``reason`` is set on ``failed`` (an ``InvalidToken`` reason). ``details``
    holds extra non-secret facts (e.g. the new id after a rotation).
    """

    kind: EventKind
    at: datetime
    token_id: str | None = None
    user_id: str | None = None
    reason: str | None = None
    client_ip: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


EventHook = Callable[[Event], None]


def emit(hook: EventHook | None, event: Event) -> None:
    """Log ``event`` under ``pat_middleware`` and hand it to ``hook``; a failing hook is logged, not raised."""
    level = logging.INFO if event.kind != "verified" else logging.DEBUG
    if logger.isEnabledFor(level):
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
