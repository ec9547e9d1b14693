"""The ``pat`` command: manage tokens from a shell.

Every command finds its :class:`~pat_middleware.auth.PATAuth` through
:func:`current_auth`, so the same commands serve ``pat`` (store from
``--store`` / ``PAT_STORE_URL``) and any other click group, such as
``flask pat``, through :func:`register_commands`::

    register_commands(group, load_auth=lambda: current_app.extensions["pat"].auth)

Errors of the library (:class:`~pat_middleware.errors.PATError`) become one
line on stderr: exit 2 for bad input (usage, policy), exit 1 for the rest
(not found, revoked, store down, invalid token). Plaintext tokens are printed
only by ``create`` and ``rotate``, on stdout, once; ``verify`` reads the token
from stdin, never from the command line.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import stat
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import click

from .auth import PATAuth
from .cache import SharedCache
from .errors import InvalidToken, NameTaken, PATError, PolicyViolation, StoreUnavailable, TokenNotFound
from .models import NewToken, TokenRecord, from_timestamp
from .policy import check_user_id
from .stores import MemoryStore, SQLiteStore, store_from_url
from .tokens import BODY_LENGTH, KEY_ID_LENGTH, find_tokens, parse, validate_prefix

__all__ = [
    "COMMANDS",
    "DEFAULT_STORE_URL",
    "current_auth",
    "main",
    "parse_duration",
    "register_commands",
]

DEFAULT_STORE_URL = "sqlite:///pat_tokens.db"

T = TypeVar("T")

_AUTH_KEY = "pat_middleware.auth"
_FACTORY_KEY = "pat_middleware.auth_factory"
_LOADER_ATTR = "pat_load_auth"

# -- parameters ---------------------------------------------------------------------
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
    """A user id, checked by the library's own rule (:func:`~pat_middleware.policy.check_user_id`)
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


# -- finding the PATAuth ---------------------------------------------------------------
def current_auth() -> PATAuth:
    """The ``PATAuth`` of the running command, built once per invocation.

    Looked up in order: a loader given to :func:`register_commands` on an
    enclosing group; a ``PATAuth`` passed as the context object
    (``runner.invoke(main, args, obj=auth)``); the store of ``pat --store``.
    An auth built from ``--store`` is closed when the command ends.
    """
    ctx = click.get_current_context()
    cached = ctx.meta.get(_AUTH_KEY)
    if isinstance(cached, PATAuth):
        return cached
    auth: PATAuth | None = None
    walk: click.Context | None = ctx
    while walk is not None and auth is None:
        loader = getattr(walk.command, _LOADER_ATTR, None)
        if loader is not None:
            auth = loader()
        walk = walk.parent
    if auth is None:
        obj = ctx.find_object(PATAuth)
        if obj is not None:
            auth = obj
    if auth is None:
        factory = ctx.meta.get(_FACTORY_KEY) or _default_factory
        auth = factory()
        ctx.find_root().call_on_close(auth.close)
    ctx.meta[_AUTH_KEY] = auth
    return auth


def _default_factory() -> PATAuth:
    try:
        return PATAuth.from_env()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    except ImportError as exc:
        raise click.ClickException(str(exc)) from None


_STORE_HINT = "--store / PAT_STORE_URL"
_CACHE_HINT = "--cache / PAT_CACHE_URL"


def _open_url(url: str, hint: str, opener: Callable[[str], T]) -> T:
    """``opener(url)``; a bad URL is a usage error naming the option it came from."""
    try:
        _ = urlsplit(url).port  # a port that is not a number: say so, not "invalid literal for int()"
        return opener(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None
    except ImportError as exc:
        raise click.ClickException(str(exc)) from None


def _redis_cache(url: str, prefix: str) -> SharedCache:
    from .redis_cache import RedisCache

    return RedisCache(url, prefix=prefix)


def _build_auth(store_url: str, cache_url: str | None, cache_prefix: str = "pat:", prefix: str = "pat") -> PATAuth:
    try:
        validate_prefix(prefix)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--prefix / PAT_PREFIX") from None
    store = _open_url(store_url, _STORE_HINT, store_from_url)
    try:
        cache = _open_url(cache_url, _CACHE_HINT, lambda url: _redis_cache(url, cache_prefix)) if cache_url else None
    except BaseException:
        store.close()
        raise
    return PATAuth(store, cache=cache, prefix=prefix)


# -- errors --------------------------------------------------------------------------
#: Longest word (run of non-blanks) and longest message an error echoes; longer ones are cut.
MAX_ECHOED_WORD = 80
MAX_MESSAGE = 400
#: A token's prefix and more than its key id: a whole token, glued to other text or
#: not, or a cut one that still holds part of the secret. What error messages redact.
_TOKEN_PART = re.compile(rf"([a-z][a-z0-9]{{1,9}})_[0-9A-Za-z]{{{KEY_ID_LENGTH + 1},}}")
#: A whole token, glued to other text or not: what file names in ``scan`` output redact
#: (a looser rule would mangle ordinary names such as ``my_configuration.txt``).
_WHOLE_TOKEN = re.compile(rf"([a-z][a-z0-9]{{1,9}})_[0-9A-Za-z]{{{BODY_LENGTH}}}")
#: The password of ``scheme://user:password@host``.
_URL_PASSWORD = re.compile(r"(//[^/:@\s]*):[^@\s]*@")
_LONG_WORD = re.compile(rf"\S{{{MAX_ECHOED_WORD + 1},}}")


def _redact_path(path: str) -> str:
    """A scanned file's name with any whole token in it redacted."""
    return _WHOLE_TOKEN.sub(r"\1_…(redacted)", path)


def redact(text: str) -> str:
    """``text`` safe to print in an error: tokens become ``<prefix>_…(redacted)``, URL
    passwords ``***``, long words and messages are cut with an ellipsis."""
    text = _TOKEN_PART.sub(r"\1_…(redacted)", text)
    text = _URL_PASSWORD.sub(r"\1:***@", text)
    text = _LONG_WORD.sub(lambda m: m.group()[: MAX_ECHOED_WORD - 1] + "…", text)
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


@contextlib.contextmanager
def _redacted_errors() -> Iterator[None]:
    """Every click error (click's own included) leaves with its message :func:`redact`-ed,
    as a UsageError (exit 2, with the usage line) or a ClickException (exit 1)."""
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:
        raise  # the help text, nothing given to redact
    except click.UsageError as exc:
        raise click.UsageError(redact(exc.format_message()), exc.ctx) from None
    except click.ClickException as exc:
        raise click.ClickException(redact(exc.format_message())) from None


def _exception_line(exc: BaseException) -> str:
    """``ClassName: first line of the message``, at most 200 characters."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:200]}".rstrip(": ")


def _unavailable(exc: StoreUnavailable) -> str:
    """The message of a store outage with the driver's error behind it (e.g. a bad URL option)."""
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    message = exc.description or str(exc)
    if cause is None:
        return message
    message = message.removesuffix(f" ({type(cause).__name__})")  # said again just after
    return f"{message}: {_exception_line(cause)}"


_POLICY_HINTS = {
    "scopes": "--scope",
    "expires_at": "expiry",
    "allowed_cidrs": "--cidr",
    "description": "--description",
    "name": "NAME",
    "user_id": "USER",
    "grace": "--grace",
}


@contextlib.contextmanager
def _library_errors(ctx: click.Context) -> Iterator[None]:
    """Library errors as click errors: exit 2 for a policy violation, 1 for the rest."""
    try:
        yield
    except NameTaken as exc:
        raise click.ClickException(exc.description) from None
    except PolicyViolation as exc:
        raise click.BadParameter(exc.description, ctx, param_hint=_POLICY_HINTS.get(exc.field or "")) from None
    except StoreUnavailable as exc:
        raise click.ClickException(_unavailable(exc)) from None
    except PATError as exc:
        raise click.ClickException(exc.description or str(exc)) from None


#: Most token ids a warning lists.
_MAX_IDS_SHOWN = 10


@contextlib.contextmanager
def _unsent_warning(ctx: click.Context) -> Iterator[None]:
    """After a command, warn on stderr if the Redis cache still holds invalidations it could
    not send: the store has the change, running apps may not know yet. The exit code stays."""
    try:
        yield
    finally:
        auth = ctx.meta.get(_AUTH_KEY)
        pending = getattr(getattr(auth, "cache", None), "pending_invalidations", None)
        if isinstance(auth, PATAuth) and pending:
            _warn_unsent(auth, pending)


def _warn_unsent(auth: PATAuth, ids: Sequence[str]) -> None:
    shown = " ".join(ids[:_MAX_IDS_SHOWN]) + (
        f" and {len(ids) - _MAX_IDS_SHOWN} more" if len(ids) > _MAX_IDS_SHOWN else ""
    )
    verifier = auth.verifier
    click.echo(
        f"Warning: the change is saved in the store, but the cache invalidation of token id(s) {shown} "
        "could not be sent to Redis.\n"
        "Running apps may accept the old state of these tokens until their cache entries expire: "
        f"up to shared_ttl + subscribed_ttl = {verifier.shared_ttl:g} s + {verifier.subscribed_ttl:g} s "
        f"(local_ttl, {verifier.local_ttl:g} s, in processes not subscribed to Redis).\n"
        "Once Redis is reachable, send it again: `pat revoke ID` again for a revoked token (revoking again "
        "re-publishes), the same `pat rename` or `pat expire` for a changed one; never `pat rotate` again "
        "(that revokes the whole family).",
        err=True,
    )


class _OneLineErrors(click.Command):
    """Errors, from parsing the arguments to running the command, are one redacted line."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        with _redacted_errors():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with _redacted_errors():
            return super().invoke(ctx)


class PATCommand(_OneLineErrors):
    """A command that turns library errors into one-line messages, never a traceback, and
    warns when an invalidation could not reach the Redis cache."""

    def invoke(self, ctx: click.Context) -> Any:
        with _redacted_errors(), _unsent_warning(ctx), _library_errors(ctx):
            return click.Command.invoke(self, ctx)


class PATGroup(_OneLineErrors, click.Group):
    """A group whose commands are :class:`PATCommand` by default; its errors, click's
    own included (an unknown command, a bad option), are redacted like theirs."""

    command_class = PATCommand


# -- output --------------------------------------------------------------------------
def _now(auth: PATAuth) -> datetime:
    return from_timestamp(auth.verifier.clock())


def _when(value: datetime | None, never: str = "never") -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else never


def _printable(text: str, indent: int | None = None) -> str:
    """User-controlled ``text`` that cannot forge output lines or drive the terminal: what
    Python calls non-printable (controls, line separators, ESC...) is escaped as in a repr
    (``\\x1b``). With ``indent``, newlines are kept and continuation lines indented that much."""
    lines = text.split("\n") if indent is not None else [text]
    escaped = ["".join(c if c.isprintable() else repr(c)[1:-1] for c in line) for line in lines]
    return ("\n" + " " * (indent or 0)).join(escaped)


def _json_out(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def _table(records: Sequence[TokenRecord], now: datetime) -> None:
    if not records:
        click.echo("no tokens")
        return
    header = ("ID", "NAME", "SCOPES", "STATE", "EXPIRES", "LAST USED")
    rows = [
        (
            r.id,
            _printable(r.name),
            " ".join(r.scopes) or "-",
            r.state(now),
            _when(r.expires_at),
            _when(r.last_used_at, "-"),
        )
        for r in records
    ]
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _print_records(auth: PATAuth, records: Sequence[TokenRecord], as_json: bool) -> None:
    """Records as JSON (``public_dict``) or as a table."""
    now = _now(auth)
    if as_json:
        _json_out([r.public_dict(now) for r in records])
    else:
        _table(records, now)


_KEY_WIDTH = 18


def _describe(record: TokenRecord, now: datetime) -> None:
    lines = [
        ("id", record.id),
        ("user", _printable(record.user_id)),
        ("name", _printable(record.name)),
        ("description", _printable(record.description, indent=_KEY_WIDTH) or "-"),
        ("scopes", " ".join(record.scopes) or "-"),
        ("state", record.state(now)),
        ("created", _when(record.created_at)),
        ("expires", _when(record.expires_at)),
        ("last used", _when(record.last_used_at, "never")),
        ("last used from", ", ".join(record.last_used_ips) or "-"),
        ("revoked", _when(record.revoked_at, "-")),
        ("rotated from", record.rotated_from or "-"),
        ("allowed networks", ", ".join(record.allowed_cidrs) or "any"),
    ]
    for key, value in lines:
        click.echo(f"{key + ':':<{_KEY_WIDTH}}{value}")


def _show_new(new: NewToken, as_json: bool, now: datetime, verb: str) -> None:
    """Print a new plaintext token once: alone on stdout (or in JSON); the notes go to stderr."""
    if as_json:
        _json_out({"token": new.token, "record": new.record.public_dict(now)})
        return
    click.echo(new.token)
    expiry = _when(new.record.expires_at)
    click.echo(
        f"{verb} token {new.record.id} ({new.record.name!r}) for {_printable(new.record.user_id)}, expires {expiry}. "
        "Copy it now: it is not shown again.",
        err=True,
    )


def _warn_if_ephemeral(auth: PATAuth) -> None:
    """A token minted into an in-memory store is gone when the command exits: say so."""
    store = auth.store
    if isinstance(store, MemoryStore) or (isinstance(store, SQLiteStore) and store.path == ":memory:"):
        click.echo("Note: the store is in memory (--store): this token is gone when the command exits.", err=True)


def _one_line(record: TokenRecord, now: datetime) -> str:
    return f"{record.id} {record.name!r} ({_printable(record.user_id)}) {record.state(now)}"


_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _one_expiry(options: dict[str, object], required: bool = False) -> None:
    """At most one (with ``required``, exactly one) of the expiry options, by option name."""
    given = [name for name, value in options.items() if value is not None and value is not False]
    *first, last = options
    names = f"{', '.join(first)} or {last}"
    if len(given) > 1:
        raise click.UsageError(f"give only one of {names}")
    if required and not given:
        raise click.UsageError(f"give one of {names}")


# -- commands ------------------------------------------------------------------------
@click.command(cls=PATCommand)
@click.argument("user", type=USER)
@click.argument("name")
@click.option("--scope", "-s", "scopes", multiple=True, help="A scope (repeat for more).")
@click.option("--expires-in", type=DURATION, help="Lifetime, e.g. 30d, 12h, 1d12h.")
@click.option("--expires-at", type=TIMESTAMP, help="Expiry date-time (ISO 8601; UTC if no offset).")
@click.option("--never-expires", is_flag=True, help="No expiry (if the policy allows it).")
@click.option("--description", default="", help="Free text.")
@click.option("--cidr", "cidrs", multiple=True, help="Only accept the token from this network (repeatable).")
@_json_option
def create(
    user: str,
    name: str,
    scopes: tuple[str, ...],
    expires_in: timedelta | None,
    expires_at: datetime | None,
    never_expires: bool,
    description: str,
    cidrs: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create a token for USER named NAME and print it once."""
    _one_expiry({"--expires-in": expires_in, "--expires-at": expires_at, "--never-expires": never_expires})
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
    )
    _show_new(new, as_json, _now(auth), "Created")
    _warn_if_ephemeral(auth)


@click.command("list", cls=PATCommand)
@click.argument("user", type=USER)
@click.option(
    "--state",
    type=click.Choice(["active", "expired", "revoked", "inactive", "all"]),
    default="active",
    show_default=True,
)
@_json_option
def list_tokens(user: str, state: Any, as_json: bool) -> None:
    """List USER's tokens."""
    auth = current_auth()
    _print_records(auth, auth.manager.list(user, state), as_json)


@click.command(cls=PATCommand)
@click.argument("token_id")
@_json_option
def show(token_id: str, as_json: bool) -> None:
    """Show one token (never its secret)."""
    auth = current_auth()
    record = auth.manager.get(token_id)
    now = _now(auth)
    if as_json:
        _json_out(record.public_dict(now))
    else:
        _describe(record, now)


@click.command(cls=PATCommand)
@click.argument("token_id")
@click.argument("name")
def rename(token_id: str, name: str) -> None:
    """Rename a live token."""
    auth = current_auth()
    record = auth.manager.rename(token_id, name)
    click.echo(f"renamed {_one_line(record, _now(auth))}")


@click.command(cls=PATCommand)
@click.argument("token_id")
@click.option("--in", "expires_in", type=DURATION, help="Expire this long from now, e.g. 7d.")
@click.option("--at", "expires_at", type=TIMESTAMP, help="Expire at this date-time (ISO 8601).")
@click.option("--never", "never_expires", is_flag=True, help="Never expire (if the policy allows it).")
def expire(token_id: str, expires_in: timedelta | None, expires_at: datetime | None, never_expires: bool) -> None:
    """Change when a live token expires."""
    _one_expiry({"--in": expires_in, "--at": expires_at, "--never": never_expires}, required=True)
    auth = current_auth()
    record = auth.manager.update(token_id, expires_in=expires_in, expires_at=expires_at, never_expires=never_expires)
    click.echo(f"{record.id} now expires {_when(record.expires_at)}")


@click.command(cls=PATCommand)
@click.argument("token_id")
def revoke(token_id: str) -> None:
    """Revoke a token now (idempotent)."""
    auth = current_auth()
    record = auth.manager.revoke(token_id)
    click.echo(f"revoked {_one_line(record, _now(auth))}")


@click.command("revoke-all", cls=PATCommand)
@click.argument("user", type=USER)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def revoke_all(user: str, yes: bool) -> None:
    """Revoke every token of USER."""
    if not yes:
        click.confirm(f"Revoke every token of {_printable(user)}?", abort=True)
    ids = current_auth().manager.revoke_all(user)
    click.echo(f"revoked {len(ids)} token(s) of {_printable(user)}" + (": " + " ".join(ids) if ids else ""))


@click.command(cls=PATCommand)
@click.argument("token_id")
@click.option("--expires-in", type=DURATION, help="Lifetime of the new token (default: the old one's).")
@click.option("--grace", type=DURATION, help="Keep the old token valid this long, e.g. 1h.")
@_json_option
def rotate(token_id: str, expires_in: timedelta | None, grace: timedelta | None, as_json: bool) -> None:
    """Replace a token by a new secret (same name and scopes) and print it once."""
    auth = current_auth()
    new = auth.manager.rotate(token_id, expires_in=expires_in, grace=grace)
    _show_new(new, as_json, _now(auth), "Rotated; new")
    _warn_if_ephemeral(auth)


@click.command(cls=PATCommand, context_settings={"ignore_unknown_options": True})
@click.option("--ip", help="Check as if the request came from this address (for allowed networks).")
@click.argument("refused", nargs=-1, type=click.UNPROCESSED, metavar="")
def verify(ip: str | None, refused: tuple[str, ...]) -> None:
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
        click.echo(f"invalid: {exc.reason}" + (f" (token id {exc.token_id})" if exc.token_id else ""))
        sys.exit(1)
    scopes = " ".join(sorted(principal.scopes)) or "-"
    click.echo(
        f"valid: user={_printable(principal.user_id)} token={principal.token_id} name={principal.token_name!r} "
        f"scopes={scopes} expires={_when(principal.expires_at)}"
    )


@click.command(cls=PATCommand)
@click.option("--within", type=DURATION, default="7d", show_default=True, help="Look this far ahead.")
@click.option("--user", type=USER, help="Only this user's tokens.")
@_json_option
def expiring(within: timedelta, user: str | None, as_json: bool) -> None:
    """List active tokens that expire soon (for reminders)."""
    auth = current_auth()
    _print_records(auth, auth.manager.expiring(within, user), as_json)


@click.command(cls=PATCommand)
@click.option(
    "--older-than",
    type=DURATION,
    default="30d",
    show_default=True,
    help="Delete tokens revoked or expired longer ago than this.",
)
def purge(older_than: timedelta) -> None:
    """Delete old revoked and expired tokens."""
    ids = current_auth().manager.purge(older_than)
    click.echo(f"purged {len(ids)} token(s)")


@dataclass(frozen=True)
class Finding:
    """A token found by ``pat scan``: where, which id, what the store says."""

    path: str
    line: int
    prefix: str
    key_id: str
    status: str

    def __str__(self) -> str:
        return f"{_printable(_redact_path(self.path))}:{self.line}: {self.prefix}_{self.key_id}… {self.status}"


_SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", ".tox", ".mypy_cache"})


def _files(paths: Iterable[str]) -> Iterator[Path]:
    for name in paths:
        path = Path(name)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
                for file in sorted(files):
                    yield Path(root) / file
        else:
            yield path


def _token_status(auth: PATAuth, token: str, prefix: str, now: datetime) -> tuple[str, TokenRecord | None]:
    """What the store says about a found token. The secret is checked before anything is called ours."""
    parts = parse(token, prefix)
    if prefix != auth.prefix:
        return "other prefix, not checked", None
    try:
        record = auth.manager.get(parts.key_id)
    except TokenNotFound:
        return "not in the store", None
    if not auth.hasher.verify(record.hash, parts.secret):
        return "id known, secret does not match (not revoked)", None
    return record.state(now), record


#: Files larger than this are skipped by ``pat scan`` (with a note on stderr).
SCAN_MAX_BYTES = 32 * 1024 * 1024


def _scan_note(path: Path, note: str) -> None:
    click.echo(f"{_printable(_redact_path(str(path)))}: {note}", err=True)


def _read_for_scan(path: Path) -> bytes | None:
    """The bytes of a regular file (symlinks followed) of at most :data:`SCAN_MAX_BYTES`;
    None, with a note on stderr, for anything else: a device or a FIFO is never read."""
    too_big = f"skipped (larger than {SCAN_MAX_BYTES} bytes)"
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            _scan_note(path, "skipped (not a regular file)")
            return None
        if info.st_size > SCAN_MAX_BYTES:
            _scan_note(path, too_big)
            return None
        # O_NONBLOCK: a FIFO swapped in after the stat cannot block the open.
        with open(path, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NONBLOCK)) as file:
            data = file.read(SCAN_MAX_BYTES + 1) or b""  # the file may have grown since the stat
    except OSError as exc:
        _scan_note(path, f"cannot read ({exc.strerror or exc})")
        return None
    if len(data) > SCAN_MAX_BYTES:
        _scan_note(path, too_big)
        return None
    return data


def _scan_file(path: Path, prefix: str | None) -> Iterator[tuple[int, str, str]]:
    """``(line, prefix, token)`` for each token in the file; lines counted from one hit to the next."""
    data = _read_for_scan(path)
    if data is None:
        return
    text = data.decode("utf-8", errors="replace")
    if "\r" in text:  # universal newlines, as text mode reads them
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    line, counted = 1, 0
    for offset, token in find_tokens(text, prefix):
        line += text.count("\n", counted, offset)
        counted = offset
        yield line, token.partition("_")[0], token


@click.command(cls=PATCommand)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--revoke", "do_revoke", is_flag=True, help="Revoke the found tokens that are live in the store.")
@click.option("--any-prefix", is_flag=True, help="Report tokens of any prefix, not only the store's.")
def scan(paths: tuple[str, ...], do_revoke: bool, any_prefix: bool) -> None:
    """Find tokens in files and directories (printed as prefix + key id, never whole).

    Exits 1 when a live token was found and not revoked.
    """
    auth = current_auth()
    now = _now(auth)
    found = live = 0
    seen: dict[str, str] = {}  # a token seen twice is looked up (and revoked) once
    for path in _files(paths):
        for line, prefix, token in _scan_file(path, None if any_prefix else auth.prefix):
            status = seen.get(token)
            if status is None:
                status, record = _token_status(auth, token, prefix, now)
                if record is not None and status == "active":
                    if do_revoke:
                        auth.manager.revoke(record.id)
                        status = "active, now revoked"
                    else:
                        live += 1
                seen[token] = status
            found += 1
            click.echo(str(Finding(str(path), line, prefix, parse(token, prefix).key_id, status)))
    click.echo(f"{found} occurrence(s) of {len(seen)} token(s), {live} live and not revoked", err=True)
    if live:
        sys.exit(1)


@click.group(cls=PATGroup)
def db() -> None:
    """Database schema."""


@db.command("init")
def db_init() -> None:
    """Create the store's tables and indexes (idempotent)."""
    auth = current_auth()
    create_schema = getattr(auth.store, "create_schema", None)
    if create_schema is None:
        click.echo(f"{type(auth.store).__name__} needs no schema; it creates what it needs on first use")
        return
    try:
        create_schema()
    except PATError:
        raise
    except Exception as exc:  # a driver error: one line, no traceback
        raise click.ClickException(f"could not create the schema: {_exception_line(exc)}") from None
    click.echo(f"schema ready ({type(auth.store).__name__})")


#: Every command :func:`register_commands` adds, in help order.
COMMANDS: tuple[click.Command, ...] = (
    create,
    list_tokens,
    show,
    rename,
    expire,
    revoke,
    revoke_all,
    rotate,
    verify,
    expiring,
    purge,
    scan,
    db,
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
        setattr(group, _LOADER_ATTR, load_auth)
    for command in commands:
        group.add_command(command)
    return group


@click.group(cls=PATGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
    default="pat:",
    show_default=True,
    help="Redis key prefix of the app's cache (env PAT_CACHE_PREFIX): must match the app's, "
    "or its workers miss the invalidations.",
)
@click.option(
    "--prefix",
    "token_prefix",
    envvar="PAT_PREFIX",
    default="pat",
    show_default=True,
    help="Token prefix (env PAT_PREFIX).",
)
@click.version_option(package_name="pat-middleware")
@click.pass_context
def main(ctx: click.Context, store_url: str, cache_url: str | None, cache_prefix: str, token_prefix: str) -> None:
    """Manage personal access tokens."""
    ctx.meta[_FACTORY_KEY] = lambda: _build_auth(store_url, cache_url, cache_prefix, token_prefix)
    ctx.meta["pat_middleware.store_url"] = store_url


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535), help="0: a free port.")
def demo(host: str, port: int) -> None:
    """Serve the example API (Starlette) with the settings page, on --store, and print curl lines."""
    try:
        from .demo import run_demo  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        missing = "the demo module" if exc.name == f"{__package__}.demo" else repr(exc.name)
        raise click.ClickException(
            f"the demo is not available: {missing} is not installed (the demo needs pat-middleware[starlette])"
        ) from None
    from .demo import DemoError

    store_url = click.get_current_context().meta.get("pat_middleware.store_url", DEFAULT_STORE_URL)
    try:
        run_demo(store_url=store_url, host=host, port=port)
    except DemoError as exc:
        if exc.option is None:
            raise click.ClickException(str(exc)) from None
        raise click.BadParameter(str(exc), param_hint=exc.option) from None


register_commands(main)
