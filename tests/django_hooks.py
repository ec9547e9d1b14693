"""The ``--hook`` of ``manage.py pat notify`` in the Django tests: remembers each call."""

from __future__ import annotations

from pat_middleware.core.models import TokenRecord

#: ``(user_id, token ids)`` of each call, in order.
calls: list[tuple[str, list[str]]] = []


def remember(user_id: str, records: list[TokenRecord]) -> None:
    """Keep the call (the test reads :data:`calls`)."""
    calls.append((user_id, [r.id for r in records]))
