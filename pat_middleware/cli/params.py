"""Click parameter types of the ``pat`` commands: durations, date-times, user ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import click

from pat_middleware.core.durations import parse_duration
from pat_middleware.core.policy import check_user_id
from pat_middleware.errors import PolicyViolation

if TYPE_CHECKING:  # click >= 8.2 types ParamType as a generic; older click is not subscriptable
    _DurationBase = click.ParamType[timedelta, Any]
    _TimestampBase = click.ParamType[datetime, Any]
    _UserBase = click.ParamType[str, Any]
else:
    _DurationBase = _TimestampBase = _UserBase = click.ParamType

#: The longest duration an option takes: any longer leaves the calendar for some option.
MAX_DURATION_DAYS = 36500


class Duration(_DurationBase):
    """A click parameter for :func:`parse_duration`, at most :data:`MAX_DURATION_DAYS`."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            duration = parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if duration > timedelta(days=MAX_DURATION_DAYS):
            self.fail(f"duration {value!r} is too long: at most {MAX_DURATION_DAYS}d (100 years)", param, ctx)
        return duration


class Timestamp(_TimestampBase):
    """An ISO 8601 date or date-time; without an offset it is taken as UTC."""

    name = "datetime"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(value)
        except (TypeError, ValueError):
            self.fail(f"invalid date-time {value!r}: use ISO 8601, e.g. 2026-05-01T12:00:00Z", param, ctx)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class User(_UserBase):
    """A user id, checked by the library's own rule (:func:`~pat_middleware.core.policy.check_user_id`)
    before any store is opened. The value is never echoed back (it may be anything pasted)."""

    name = "user"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return check_user_id(str(value))
        except PolicyViolation as exc:
            self.fail(exc.description, param, ctx)


DURATION = Duration()
TIMESTAMP = Timestamp()
USER = User()


#: ``--json`` on every command that prints records or results.
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
