"""The ``pat`` commands, and :func:`register_commands` to add them to another click group."""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from pat_middleware.auth import PATAuth
from pat_middleware.cli.app import load_app
from pat_middleware.cli.context import DEFAULT_STORE_URL, FACTORY_KEY, LOADER_ATTR, build_auth, current_auth
from pat_middleware.cli.db_command import db
from pat_middleware.cli.errors import PATCommand, PATGroup, store_name
from pat_middleware.cli.listeners import invalidated
from pat_middleware.cli.output import (
    describe,
    format_when,
    json_out,
    one_expiry,
    one_line,
    print_records,
    printable_text,
    show_new,
    utc_now,
    warn_if_ephemeral,
)
from pat_middleware.cli.oversight_commands import OVERSIGHT_COMMANDS
from pat_middleware.cli.params import DURATION, TIMESTAMP, USER, json_option
from pat_middleware.cli.scan_command import scan
from pat_middleware.config import check_cache_prefix
from pat_middleware.core import defaults
from pat_middleware.core.models import TokenRecord
from pat_middleware.errors import InvalidToken


@click.command(cls=PATCommand)
@click.argument("user", type=USER)
@click.argument("name")
@click.option("--scope", "-s", "scopes", multiple=True, help="A scope (repeat for more).")
@click.option(
    "--expires-in",
    type=DURATION,
    help="Lifetime, e.g. 30d, 12h, 1d12h. Without an expiry option: the policy's default_lifetime "
    "(30d with the default Policy; the app's with --app), at most its max_lifetime (366d by default).",
)
@click.option("--expires-at", type=TIMESTAMP, help="Expiry date-time (ISO 8601; UTC if no offset).")
@click.option("--never-expires", is_flag=True, help="No expiry (if the policy allows it).")
@click.option("--description", default="", help="Free text.")
@click.option("--cidr", "cidrs", multiple=True, help="Only accept the token from this network (repeatable).")
@click.option(
    "--resource",
    "resources",
    multiple=True,
    help="Limit the token to this resource id, e.g. acme/web or acme/* (repeatable; none: every resource).",
)
@json_option
def create(
    user: str,
    name: str,
    scopes: tuple[str, ...],
    expires_in: timedelta | None,
    expires_at: datetime | None,
    never_expires: bool,
    description: str,
    cidrs: tuple[str, ...],
    resources: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create a token for USER named NAME and print it once.

    It expires after the policy's default lifetime (30 days by default) unless
    --expires-in, --expires-at or --never-expires says otherwise.
    """
    one_expiry({"--expires-in": expires_in, "--expires-at": expires_at, "--never-expires": never_expires})
    auth = current_auth()
    new = auth.manager.create(
        user,
        name,
        scopes,
        expires_in=expires_in,
        expires_at=expires_at,
        never_expires=never_expires,
        description=description,
        allowed_cidrs=cidrs,
        resources=resources or None,
    )
    show_new(new, as_json, utc_now(auth), "Created")
    warn_if_ephemeral(auth)


@click.command("list", cls=PATCommand)
@click.argument("user", type=USER)
@click.option(
    "--state",
    type=click.Choice(["active", "rotated", "expired", "revoked", "inactive", "all"]),
    default="active",
    show_default=True,
)
@json_option
def list_tokens(user: str, state: Any, as_json: bool) -> None:
    """List USER's tokens."""
    auth = current_auth()
    records = auth.manager.list(user, state)
    print_records(auth, records, as_json)
    _say_where_if_none(auth, records)


@click.command(cls=PATCommand)
@click.argument("token_id")
@json_option
def show(token_id: str, as_json: bool) -> None:
    """Show one token (never its secret)."""
    auth = current_auth()
    record = auth.manager.get(token_id)
    now = utc_now(auth)
    if as_json:
        json_out(record.public_dict(now, auth.policy.revoke_unused_after))
    else:
        describe(record, now, auth.policy.revoke_unused_after)


def _say_where_if_none(auth: PATAuth, records: list[TokenRecord]) -> None:
    """An empty answer says, on stderr, which store was searched (it may not be the app's)."""
    if not records:
        click.echo(f"(searched {store_name(auth)})", err=True)


def _record_result(auth: PATAuth, record: TokenRecord, as_json: bool, line: str) -> None:
    """A changed record: ``line``, or the record as JSON."""
    if as_json:
        json_out(record.public_dict(utc_now(auth), auth.policy.revoke_unused_after))
    else:
        click.echo(line)


@click.command("resources", cls=PATCommand)
@click.argument("token_id")
@click.option("--resource", "resources", multiple=True, help="A resource id the token is limited to (repeatable).")
@click.option("--all", "every", is_flag=True, help="Every resource (lift the limit, if the policy allows it).")
@json_option
def set_resources(token_id: str, resources: tuple[str, ...], every: bool, as_json: bool) -> None:
    """Limit a live token to the given resources, or to --all."""
    if every == bool(resources):
        raise click.UsageError("give --resource (repeatable) or --all, not both or neither")
    auth = current_auth()
    record = auth.manager.update(token_id, resources=None if every else resources)
    invalidated()
    _record_result(auth, record, as_json, f"updated {one_line(record, utc_now(auth))}")


@click.command(cls=PATCommand)
@click.argument("token_id")
@click.argument("name")
@json_option
def rename(token_id: str, name: str, as_json: bool) -> None:
    """Rename a live token."""
    auth = current_auth()
    record = auth.manager.rename(token_id, name)
    invalidated()
    _record_result(auth, record, as_json, f"renamed {one_line(record, utc_now(auth))}")


@click.command(cls=PATCommand)
@click.argument("token_id")
@click.option("--in", "expires_in", type=DURATION, help="Expire this long from now, e.g. 7d.")
@click.option("--at", "expires_at", type=TIMESTAMP, help="Expire at this date-time (ISO 8601).")
@click.option("--never", "never_expires", is_flag=True, help="Never expire (if the policy allows it).")
@json_option
def expire(
    token_id: str, expires_in: timedelta | None, expires_at: datetime | None, never_expires: bool, as_json: bool
) -> None:
    """Change when a live token expires."""
    one_expiry({"--in": expires_in, "--at": expires_at, "--never": never_expires}, required=True)
    auth = current_auth()
    record = auth.manager.update(token_id, expires_in=expires_in, expires_at=expires_at, never_expires=never_expires)
    invalidated()
    _record_result(auth, record, as_json, f"{record.id} now expires {format_when(record.expires_at)}")


@click.command(cls=PATCommand)
@click.argument("token_id")
@json_option
def revoke(token_id: str, as_json: bool) -> None:
    """Revoke a token now (idempotent)."""
    auth = current_auth()
    record = auth.manager.revoke(token_id)
    invalidated()
    _record_result(auth, record, as_json, f"revoked {record.id} {record.name!r} ({printable_text(record.user_id)})")


@click.command("revoke-all", cls=PATCommand)
@click.argument("user", type=USER)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
def revoke_all(user: str, yes: bool, as_json: bool) -> None:
    """Revoke every token of USER."""
    if not yes:
        click.confirm(f"Revoke every token of {printable_text(user)}?", abort=True, err=as_json)
    ids = current_auth().manager.revoke_all(user)
    if ids:
        invalidated()
    if as_json:
        json_out({"user": user, "revoked": ids})
    else:
        click.echo(f"revoked {len(ids)} token(s) of {printable_text(user)}" + (": " + " ".join(ids) if ids else ""))


@click.command(cls=PATCommand)
@click.argument("token_id")
@click.option("--expires-in", type=DURATION, help="Lifetime of the new token (default: the old one's).")
@click.option("--grace", type=DURATION, help="Keep the old token valid this long, e.g. 1h.")
@json_option
def rotate(token_id: str, expires_in: timedelta | None, grace: timedelta | None, as_json: bool) -> None:
    """Replace a token by a new secret (same name and scopes) and print it once."""
    auth = current_auth()
    new = auth.manager.rotate(token_id, expires_in=expires_in, grace=grace)
    invalidated()
    show_new(new, as_json, utc_now(auth), "Rotated; new")
    warn_if_ephemeral(auth)


@click.command(cls=PATCommand, context_settings={"ignore_unknown_options": True})
@click.option("--ip", help="Check as if the request came from this address (for allowed networks).")
@click.argument("refused", nargs=-1, type=click.UNPROCESSED, metavar="")
@json_option
def verify(ip: str | None, refused: tuple[str, ...], as_json: bool) -> None:
    """Check a token read from stdin (never from the command line).

    Prints the principal, or the reason it is refused (exit 1).
    """
    if refused:
        # Never echo what was given: it may be a token, now in the shell history.
        raise click.UsageError("verify reads the token from stdin, not from arguments: pat verify < file")
    if ip is not None:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise click.BadParameter("not an IP address", param_hint="--ip") from None  # never echo it
    stdin = sys.stdin
    token = click.prompt("Token", hide_input=True, err=True) if stdin.isatty() else stdin.read()
    token = str(token).strip()
    if not token:
        raise click.UsageError("no token on stdin")
    auth = current_auth()
    try:
        # An operator's check is not a use of the token: last_used stays as it was.
        principal = auth.run(auth.verifier.verify_flow(token, ip, record_use=False))
    except InvalidToken as exc:
        if as_json:
            json_out({"valid": False, "reason": exc.reason, "token_id": exc.token_id or None})
        else:
            click.echo(f"invalid: {exc.reason}" + (f" (token id {exc.token_id})" if exc.token_id else ""))
        sys.exit(1)
    if as_json:
        expires = principal.expires_at.isoformat() if principal.expires_at else None
        json_out(
            {
                "valid": True,
                "user_id": principal.user_id,
                "token_id": principal.token_id,
                "name": principal.token_name,
                "scopes": sorted(principal.scopes),
                "expires_at": expires,
            }
        )
        return
    scopes = " ".join(sorted(principal.scopes)) or "-"
    click.echo(
        f"valid: user={printable_text(principal.user_id)} token={principal.token_id} name={principal.token_name!r} "
        f"scopes={scopes} expires={format_when(principal.expires_at)}"
    )


@click.command(cls=PATCommand)
@click.option("--within", type=DURATION, default="7d", show_default=True, help="Look this far ahead.")
@click.option("--user", type=USER, help="Only this user's tokens.")
@json_option
def expiring(within: timedelta, user: str | None, as_json: bool) -> None:
    """List active tokens that expire soon (for reminders)."""
    auth = current_auth()
    records = auth.manager.expiring(within, user)
    print_records(auth, records, as_json)
    _say_where_if_none(auth, records)


@click.command(cls=PATCommand)
@click.option(
    "--older-than",
    type=DURATION,
    default="30d",
    show_default=True,
    help="Delete tokens revoked or expired longer ago than this.",
)
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@json_option
def purge(older_than: timedelta, dry_run: bool, as_json: bool) -> None:
    """Delete old revoked and expired tokens."""
    ids = current_auth().manager.purge(older_than, dry_run=dry_run)
    if dry_run and as_json:
        json_out({"would_purge": ids})
    elif dry_run:
        click.echo("\n".join([f"would purge {len(ids)} token(s)", *ids]))
    if dry_run:
        return
    if ids:
        invalidated()
    if as_json:
        json_out({"purged": ids})
    else:
        click.echo(f"purged {len(ids)} token(s)")


#: Every command :func:`register_commands` adds, in help order.
COMMANDS: tuple[click.Command, ...] = (
    create,
    list_tokens,
    show,
    rename,
    expire,
    set_resources,
    revoke,
    revoke_all,
    rotate,
    verify,
    expiring,
    purge,
    scan,
    db,
    *OVERSIGHT_COMMANDS,
)


def register_commands(
    group: click.Group,
    load_auth: Callable[[], PATAuth] | None = None,
    commands: Iterable[click.Command] = COMMANDS,
) -> click.Group:
    """Add the token commands to ``group`` (for example ``flask pat``).

    ``load_auth`` builds the ``PATAuth`` the commands use; it is called at most
    once per invocation, when a command first needs it, and the caller owns
    (closes) what it returns. Without it, the commands use a ``PATAuth`` passed
    as the context object, else ``PAT_STORE_URL``.
    """
    if load_auth is not None:
        setattr(group, LOADER_ATTR, load_auth)
    for command in commands:
        group.add_command(command)
    return group


def _cache_prefix(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value.strip() and ctx.get_parameter_source("cache_prefix") is ParameterSource.ENVIRONMENT:
        return defaults.CACHE_PREFIX  # an empty PAT_CACHE_PREFIX is the default, as for PATAuth.from_env
    try:
        return check_cache_prefix(value, "the cache prefix")
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


#: Options that say what ``--app`` already decides.
_APP_DECIDES = {
    "store_url": "--store",
    "cache_url": "--cache",
    "cache_prefix": "--cache-prefix",
    "token_prefix": "--prefix",
}
#: Commands that may create the default store's file (the others refuse to, see ``main``).
_CREATES_STORE = frozenset({"create", "db", "demo"})


@click.group(cls=PATGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--app",
    "app_spec",
    envvar="PAT_APP",
    metavar="MODULE:ATTR",
    help="Use the app's own PATAuth (env PAT_APP): ATTR is a PATAuth, a Flask app with PAT(app), or a "
    "function of no arguments returning either. The module is imported from the current directory. "
    "Then --store, --cache, --cache-prefix and --prefix do not apply.",
)
@click.option(
    "--store",
    "store_url",
    envvar="PAT_STORE_URL",
    default=DEFAULT_STORE_URL,
    show_default=True,
    help="Token store URL (env PAT_STORE_URL): sqlite:///file.db, postgresql://..., redis://..., memory://",
)
@click.option("--cache", "cache_url", envvar="PAT_CACHE_URL", help="Redis cache URL (env PAT_CACHE_URL).")
@click.option(
    "--cache-prefix",
    envvar="PAT_CACHE_PREFIX",
    default=defaults.CACHE_PREFIX,
    show_default=True,
    callback=_cache_prefix,
    help="Redis key prefix of the app's cache (env PAT_CACHE_PREFIX): must match the app's, "
    "or its workers miss the invalidations.",
)
@click.option(
    "--prefix",
    "token_prefix",
    envvar="PAT_PREFIX",
    default=defaults.TOKEN_PREFIX,
    show_default=True,
    help="Token prefix (env PAT_PREFIX).",
)
@click.version_option(package_name="pat-middleware")
@click.pass_context
def main(
    ctx: click.Context,
    app_spec: str | None,
    store_url: str,
    cache_url: str | None,
    cache_prefix: str,
    token_prefix: str,
) -> None:
    """Manage personal access tokens.

    Without --app, the other PAT_* variables of PATAuth.from_env apply too (the
    hasher's PAT_HMAC_KEY, the TTLs, PAT_REALM...): give the CLI the app's settings.

    Shell completion (bash): eval "$(_PAT_COMPLETE=bash_source pat)"; zsh and fish:
    see docs/cli.md.
    """
    ctx.meta["pat_middleware.store_url"] = store_url
    if app_spec:
        given = [flag for name, flag in _APP_DECIDES.items() if _on_command_line(ctx, name)]
        if given:
            raise click.UsageError(f"{', '.join(given)} cannot be used with --app: the app's PATAuth decides")
        ctx.meta[FACTORY_KEY] = lambda: _app_auth(app_spec)
        return
    defaulted = ctx.get_parameter_source("store_url") is ParameterSource.DEFAULT
    may_create = ctx.invoked_subcommand in _CREATES_STORE

    def build() -> tuple[PATAuth, bool]:
        if defaulted and not may_create:
            _default_store_exists()
        return build_auth(store_url, cache_url, cache_prefix, token_prefix), True

    ctx.meta[FACTORY_KEY] = build


def _default_store_exists() -> None:
    """A command that reads tokens never creates an empty ``./pat_tokens.db`` by opening it."""
    path = Path(defaults.STORE_FILE)
    if not path.exists():
        raise click.UsageError(
            f"no token store at ./{path} (the default --store): name the app's with --app MODULE:ATTR, "
            "--store URL or PAT_STORE_URL"
        )


def _on_command_line(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE


def _app_auth(spec: str) -> tuple[PATAuth, bool]:
    found = load_app(spec)
    return found.auth, found.owned


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535), help="0: a free port.")
def demo(host: str, port: int) -> None:
    """Serve the example API (Starlette) with the settings page, on --store, and print curl lines."""
    try:
        from pat_middleware.cli.demo import run_demo
    except ImportError as exc:
        missing = "the demo module" if exc.name == "pat_middleware.cli.demo" else repr(exc.name)
        raise click.ClickException(
            f"the demo is not available: {missing} is not installed (the demo needs pat-middleware[starlette])"
        ) from None
    from pat_middleware.cli.demo import DemoError

    store_url = click.get_current_context().meta.get("pat_middleware.store_url", DEFAULT_STORE_URL)
    try:
        run_demo(store_url=store_url, host=host, port=port)
    except DemoError as exc:
        if exc.option is None:
            raise click.ClickException(str(exc)) from None
        raise click.BadParameter(str(exc), param_hint=exc.option) from None


register_commands(main)
