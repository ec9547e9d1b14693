"""The oversight commands: ``pat admin list|revoke|log`` across every user's tokens,
``pat sweep`` (the inactivity policy) and ``pat notify`` (expiry reminders).

Actions are logged with the actor ``cli:<operating-system user>``.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import click

from pat_middleware.cli.app import load_callable
from pat_middleware.cli.context import current_auth
from pat_middleware.cli.errors import PATCommand, PATGroup
from pat_middleware.cli.listeners import invalidated
from pat_middleware.cli.output import format_when, json_out, print_records, printable_text, utc_now
from pat_middleware.cli.params import DURATION, TIMESTAMP, USER, json_option
from pat_middleware.core.audit import LOGGED_KINDS, LogEntry
from pat_middleware.core.oversight import TokenFilter
from pat_middleware.core.query import MAX_PAGE, SORTS, STATE_FILTERS

__all__ = ["OVERSIGHT_COMMANDS", "actor", "admin", "notify", "sweep"]

F = TypeVar("F", bound=Callable[..., Any])


def actor() -> str:
    """Who the log says acted: ``cli:<operating-system user>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in this environment (a container without /etc/passwd entry)
        return "cli:unknown"


_FILTER_OPTIONS: list[Callable[[F], F]] = [
    click.option("--user", "user_id", type=USER, help="Only this user's tokens."),
    click.option("--state", type=click.Choice(STATE_FILTERS), default="all", show_default=True),
    click.option("--scope", help="Tokens that can act with this scope (held, by wildcard or implied)."),
    click.option("--name-contains", help="Names containing this text (case-insensitive)."),
    click.option("--created-after", type=TIMESTAMP, help="Created after this date-time (ISO 8601)."),
    click.option("--created-before", type=TIMESTAMP, help="Created before this date-time."),
    click.option("--last-used-after", type=TIMESTAMP, help="Used after this date-time."),
    click.option("--last-used-before", type=TIMESTAMP, help="Last used before this date-time (never-used: no)."),
    click.option("--unused-for", type=DURATION, help="No use (or, never used, no creation) for this long: 90d."),
    click.option("--expiring-within", type=DURATION, help="Expiring within this long from now: 7d."),
]
_FILTER_NAMES = (
    "user_id", "state", "scope", "name_contains", "created_after", "created_before",
    "last_used_after", "last_used_before", "unused_for", "expiring_within",
)  # fmt: skip


def filter_options(command: F) -> F:
    """The :class:`TokenFilter` options, on ``command``."""
    for option in reversed(_FILTER_OPTIONS):
        command = option(command)
    return command


def _selection(options: dict[str, Any]) -> TokenFilter:
    return TokenFilter(**{name: options.pop(name) for name in _FILTER_NAMES})


@click.group(cls=PATGroup)
def admin() -> None:
    """Every user's tokens: list with filters, revoke by filter, read the security log."""


@admin.command("list", cls=PATCommand)
@filter_options
@click.option("--sort", type=click.Choice(SORTS), default="-created_at", show_default=True)
@click.option("--limit", type=click.IntRange(1, MAX_PAGE), default=100, show_default=True)
@click.option("--cursor", help="Continue a listing (the cursor a page printed).")
@click.option("--all", "every", is_flag=True, help="Every page, not only the first.")
@json_option
def admin_list(sort: Any, limit: int, cursor: str | None, every: bool, as_json: bool, **options: Any) -> None:
    """List tokens across users, with filters."""
    auth = current_auth()
    selection = _selection(options)
    page = auth.manager.search(selection, sort=sort, cursor=cursor, limit=limit)
    records = list(page.records)
    while every and page.cursor is not None:
        page = auth.manager.search(selection, sort=sort, cursor=page.cursor, limit=limit)
        records.extend(page.records)
    if as_json:
        now, unused_after = utc_now(auth), auth.policy.revoke_unused_after
        json_out({"tokens": [r.public_dict(now, unused_after) for r in records], "next_cursor": page.cursor})
        return
    print_records(auth, records, False, owners=True)
    if page.cursor is not None:
        click.echo(f"more: --cursor {page.cursor}", err=True)


@admin.command("revoke", cls=PATCommand)
@filter_options
@click.option("--dry-run", is_flag=True, help="Only say which tokens would be revoked.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
def admin_revoke(dry_run: bool, yes: bool, as_json: bool, **options: Any) -> None:
    """Revoke every token matching the filters (at least one), across users.

    Without --yes, shows how many tokens match and asks first."""
    auth = current_auth()
    selection = _selection(options)
    if not dry_run and not yes:
        preview = auth.manager.revoke_matching(selection, actor=actor(), dry_run=True)
        if not preview.count:
            click.echo("no token matches: nothing to revoke")
            return
        click.confirm(f"revoke {preview.count} token(s)?", abort=True, err=True)
    report = auth.manager.revoke_matching(selection, actor=actor(), dry_run=dry_run)
    if report.ids and not dry_run:
        invalidated()
    if as_json:
        json_out({"dry_run": dry_run, "count": report.count, "ids": report.ids, "filter": report.criteria})
        return
    verb = "would revoke" if dry_run else "revoked"
    click.echo("\n".join([f"{verb} {report.count} token(s)", *report.ids]))


@admin.command("log", cls=PATCommand)
@click.option("--user", "user_id", type=USER, help="Only this user's log.")
@click.option("--token", "token_id", help="Only this token's entries.")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(sorted(LOGGED_KINDS)), help="Repeatable.")
@click.option("--since", type=TIMESTAMP, help="At or after this date-time.")
@click.option("--until", type=TIMESTAMP, help="Before this date-time.")
@click.option("--limit", type=click.IntRange(1, MAX_PAGE), default=100, show_default=True)
@click.option("--cursor", help="Continue (the cursor a page printed).")
@json_option
def admin_log(
    user_id: str | None,
    token_id: str | None,
    kinds: tuple[str, ...],
    since: datetime | None,
    until: datetime | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """Read the security log, newest first."""
    auth = current_auth()
    page = auth.manager.security_log(
        user_id=user_id, token_id=token_id, kinds=kinds or None, since=since, until=until, cursor=cursor, limit=limit
    )
    if as_json:
        json_out({"entries": [e.public_dict() for e in page.entries], "next_cursor": page.cursor})
        return
    if not page.entries:
        click.echo("no entries")
    for entry in page.entries:
        click.echo(_log_line(entry))
    if page.cursor is not None:
        click.echo(f"more: --cursor {page.cursor}", err=True)


def _log_line(entry: LogEntry) -> str:
    parts = [format_when(entry.at), entry.kind, entry.token_id or "-", printable_text(entry.user_id or "-")]
    if entry.reason:
        parts.append(f"reason={entry.reason}")
    if entry.actor:
        parts.append(f"by={printable_text(entry.actor)}")
    if entry.client_ip:
        parts.append(f"from={entry.client_ip}")
    details = {k: v for k, v in entry.details.items() if k != "action"}
    if "action" in entry.details:
        parts.append(f"action={entry.details['action']}")
    if details:
        parts.append(printable_text(" ".join(f"{k}={v}" for k, v in sorted(details.items()))))
    return "  ".join(parts)


@click.command(cls=PATCommand)
@click.option("--dry-run", is_flag=True, help="Only list the inactive tokens.")
@json_option
def sweep(dry_run: bool, as_json: bool) -> None:
    """Revoke tokens unused for the policy's revoke_unused_after (PAT_REVOKE_UNUSED_AFTER, or --app's)."""
    ids = current_auth().manager.sweep(actor=actor(), dry_run=dry_run)
    if ids and not dry_run:
        invalidated()
    if as_json:
        json_out({"dry_run": dry_run, "count": len(ids), "ids": ids})
        return
    verb = "would revoke" if dry_run else "revoked"
    click.echo("\n".join([f"{verb} {len(ids)} inactive token(s)", *ids]))


@click.command(cls=PATCommand)
@click.option("--within", type=DURATION, default="7d", show_default=True, help="Tokens expiring this soon.")
@click.option(
    "--hook",
    "hook_spec",
    required=True,
    metavar="MODULE:FUNCTION",
    help="Called as function(user_id, records) once per owner (imported from the current directory).",
)
@json_option
def notify(within: timedelta, hook_spec: str, as_json: bool) -> None:
    """Tell owners about their tokens expiring within --within, each token once per window.

    Run it daily from cron: tokens already notified for this window and expiry are
    skipped (remembered in the store). Exits 1 if the hook failed for an owner."""
    hook = load_callable(hook_spec, "--hook")
    auth = current_auth()
    report = auth.manager.notify(within, hook)
    failed = report.failed
    if as_json:
        json_out({"notified": report.notified, "failed": failed})
    else:
        count = sum(len(ids) for ids in report.notified.values())
        click.echo(f"notified {len(report.notified)} owner(s) about {count} token(s)")
    if failed:
        raise click.ClickException(f"the hook failed for {len(failed)} owner(s): {', '.join(failed)} (see the log)")


#: The oversight commands, for ``pat`` and ``flask pat``.
OVERSIGHT_COMMANDS: tuple[click.Command, ...] = (admin, sweep, notify)
