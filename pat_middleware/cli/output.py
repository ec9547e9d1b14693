"""What the ``pat`` commands print: tables, records, new tokens; user-controlled text escaped."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import click

from pat_middleware.auth import PATAuth
from pat_middleware.core.models import NewToken, TokenRecord, from_timestamp
from pat_middleware.stores import MemoryStore, SQLiteStore


def utc_now(auth: PATAuth) -> datetime:
    return from_timestamp(auth.verifier.clock())


def format_when(value: datetime | None, never: str = "never") -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else never


def printable_text(text: str, indent: int | None = None) -> str:
    """User-controlled ``text`` that cannot forge output lines or drive the terminal: what
    Python calls non-printable (controls, line separators, ESC...) is escaped as in a repr
    (``\\x1b``). With ``indent``, newlines are kept and continuation lines indented that much."""
    lines = text.split("\n") if indent is not None else [text]
    escaped = ["".join(c if c.isprintable() else repr(c)[1:-1] for c in line) for line in lines]
    return ("\n" + " " * (indent or 0)).join(escaped)


def json_out(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def _table(records: Sequence[TokenRecord], now: datetime, unused_after: timedelta | None, owners: bool) -> None:
    if not records:
        click.echo("no tokens")
        return
    header = ("ID", *(("USER",) if owners else ()), "NAME", "SCOPES", "STATE", "EXPIRES", "LAST USED")
    rows = [
        (
            r.id,
            *((printable_text(r.user_id),) if owners else ()),
            printable_text(r.name),
            " ".join(r.scopes) or "-",
            r.state(now, unused_after),
            format_when(r.expires_at),
            format_when(r.last_used_at, "-"),
        )
        for r in records
    ]
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def print_records(auth: PATAuth, records: Sequence[TokenRecord], as_json: bool, owners: bool = False) -> None:
    """Records as JSON (``public_dict``) or as a table (``owners``: with a USER column)."""
    now, unused_after = utc_now(auth), auth.policy.revoke_unused_after
    if as_json:
        json_out([r.public_dict(now, unused_after) for r in records])
    else:
        _table(records, now, unused_after, owners)


_KEY_WIDTH = 18


def _state(record: TokenRecord, now: datetime, unused_after: timedelta | None) -> str:
    state = record.state(now, unused_after)
    return f"rotated (grace ends {format_when(record.revoked_at)})" if state == "rotated" else state


def describe(record: TokenRecord, now: datetime, unused_after: timedelta | None = None) -> None:
    lines = [
        ("id", record.id),
        ("user", printable_text(record.user_id)),
        ("name", printable_text(record.name)),
        ("description", printable_text(record.description, indent=_KEY_WIDTH) or "-"),
        ("scopes", " ".join(record.scopes) or "-"),
        ("state", _state(record, now, unused_after)),
        ("created", format_when(record.created_at)),
        ("expires", format_when(record.expires_at)),
        ("last used", format_when(record.last_used_at, "never")),
        ("last used from", ", ".join(record.last_used_ips) or "-"),
        ("revoked", format_when(record.revoked_at, "-")),
        ("rotated from", record.rotated_from or "-"),
        ("allowed networks", ", ".join(record.allowed_cidrs) or "any"),
        ("resources", "all" if record.resources is None else " ".join(map(printable_text, record.resources))),
    ]
    for key, value in lines:
        click.echo(f"{key + ':':<{_KEY_WIDTH}}{value}")


def show_new(new: NewToken, as_json: bool, now: datetime, verb: str) -> None:
    """Print a new plaintext token once: alone on stdout (or in JSON); the notes go to stderr."""
    if as_json:
        json_out({"token": new.token, "record": new.record.public_dict(now)})
        return
    click.echo(new.token)
    expiry = format_when(new.record.expires_at)
    owner = printable_text(new.record.user_id)
    click.echo(
        f"{verb} token {new.record.id} ({new.record.name!r}) for {owner}, expires {expiry}. "
        "Copy it now: it is not shown again.",
        err=True,
    )


def warn_if_ephemeral(auth: PATAuth) -> None:
    """A token minted into an in-memory store is gone when the command exits: say so."""
    store = auth.store
    if isinstance(store, MemoryStore) or (isinstance(store, SQLiteStore) and store.path == ":memory:"):
        click.echo("Note: the store is in memory (--store): this token is gone when the command exits.", err=True)


def one_line(record: TokenRecord, now: datetime) -> str:
    return f"{record.id} {record.name!r} ({printable_text(record.user_id)}) {record.state(now)}"


def one_expiry(options: dict[str, object], required: bool = False) -> None:
    """At most one (with ``required``, exactly one) of the expiry options, by option name."""
    given = [name for name, value in options.items() if value is not None and value is not False]
    *first, last = options
    names = f"{', '.join(first)} or {last}"
    if len(given) > 1:
        raise click.UsageError(f"give only one of {names}")
    if required and not given:
        raise click.UsageError(f"give one of {names}")
