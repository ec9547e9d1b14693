"""Durations and moments as people type them (the CLI's options, the admin API's
query parameters): ``30d``, ``12h``, ``1d12h``; ISO 8601 date-times."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

__all__ = ["parse_duration", "parse_moment"]

_DURATION = re.compile(r"([0-9]+)([wdhms])")  # ASCII digits only: \d also takes e.g. Arabic-Indic ones
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``15m``, ``90s``, ``2w`` or combinations (``1d12h``) as a timedelta.

    Raises ValueError for anything else.
    """
    value = text.strip().lower() if isinstance(text, str) else ""
    parts = _DURATION.findall(value)
    if not value or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"invalid duration {text!r}: use e.g. 30d, 12h, 15m, 90s, 2w or 1d12h")
    total: dict[str, int] = {}
    for number, unit in parts:
        if _UNITS[unit] in total:
            raise ValueError(f"invalid duration {text!r}: unit {unit!r} given twice")
        total[_UNITS[unit]] = int(number)
    try:
        return timedelta(**total)
    except OverflowError:
        raise ValueError(f"duration {text!r} is too long") from None


def parse_moment(text: str) -> datetime:
    """An ISO 8601 date or date-time (``2026-05-01``, ``2026-05-01T12:00:00Z``); without
    an offset it is UTC. Raises ValueError for anything else."""
    try:
        parsed = datetime.fromisoformat(text)
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (TypeError, ValueError):
        raise ValueError(f"invalid date-time {text!r}: use ISO 8601, e.g. 2026-05-01T12:00:00Z") from None
    except OverflowError:  # an offset that takes it off the calendar: 0001-01-01T00:00+01:00
        raise ValueError(f"date-time {text!r} is out of range") from None
