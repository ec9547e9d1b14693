"""Errors of the ``pat`` commands: one line on stderr, never a traceback, never a token
or a URL password; and the warning when a Redis invalidation could not be sent."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Sequence
from typing import Any

import click

from pat_middleware.auth import PATAuth
from pat_middleware.cli.context import AUTH_KEY
from pat_middleware.cli.listeners import sent_invalidations, warn_if_unheard
from pat_middleware.core.health import exception_line
from pat_middleware.core.tokens import BODY_LENGTH, KEY_ID_LENGTH
from pat_middleware.errors import NameTaken, PATError, PolicyViolation, StoreUnavailable, TokenNotFound

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


def redact_path(path: str) -> str:
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


def store_name(auth: object) -> str:
    """The store of ``auth`` as its repr says it (type, file or URL without password, table)."""
    store = getattr(auth, "store", None)
    if store is None:
        return "the store"
    # Tokens and URL passwords hidden, but no long word cut: the database's name must show whole.
    return _URL_PASSWORD.sub(r"\1:***@", _TOKEN_PART.sub(r"\1_…(redacted)", repr(store)))


def _unavailable(exc: StoreUnavailable) -> str:
    """The message of a store outage with the driver's error behind it (e.g. a bad URL option)."""
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    message = exc.description or str(exc)
    if cause is None:
        return message
    message = message.removesuffix(f" ({type(cause).__name__})")  # said again just after
    return f"{message}: {exception_line(cause)}"


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
    except TokenNotFound as exc:  # say where it was looked for: the app's store may be another
        raise click.ClickException(f"{exc.description} in {store_name(ctx.meta.get(AUTH_KEY))}") from None
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
    not send: the store has the change, running apps may not know yet. After one that sent
    them, warn when no process listens on the channel (see :mod:`.listeners`). The exit code stays."""
    done = False
    try:
        yield
        done = True
    except SystemExit:  # a command's own exit status (scan): what it sent still counts
        done = True
        raise
    finally:
        auth = ctx.meta.get(AUTH_KEY)
        pending = getattr(getattr(auth, "cache", None), "pending_invalidations", None)
        if isinstance(auth, PATAuth) and pending:
            _warn_unsent(auth, pending)
        elif isinstance(auth, PATAuth) and done and sent_invalidations(ctx):
            warn_if_unheard(auth)


def _warn_unsent(auth: PATAuth, ids: Sequence[str]) -> None:
    shown = " ".join(ids[:_MAX_IDS_SHOWN]) + (
        f" and {len(ids) - _MAX_IDS_SHOWN} more" if len(ids) > _MAX_IDS_SHOWN else ""
    )
    verifier = auth.verifier
    click.echo(
        f"Warning: the change is saved in the store, but the cache invalidation of token id(s) {shown} "
        "could not be sent to Redis.\n"
        "Running apps learn of it from the store's change feed within their revocation_poll "
        "(5 s by default); apps with the feed turned off may accept the old state of these tokens until "
        "their cache entries expire: up to shared_ttl + subscribed_ttl = "
        f"{verifier.shared_ttl:g} s + {verifier.subscribed_ttl:g} s.\n"
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
        _quiet_library_log()
        with _redacted_errors(), _unsent_warning(ctx), _library_errors(ctx):
            return click.Command.invoke(self, ctx)


_QUIET = logging.NullHandler()


def _quiet_library_log() -> None:
    """The command says what went wrong in its one line: without a logging setup of
    the host's, the library's log records would otherwise reach stderr too (through
    Python's last-resort handler). Configured handlers still get them."""
    library = logging.getLogger("pat_middleware")
    if _QUIET not in library.handlers:
        library.addHandler(_QUIET)


class PATGroup(_OneLineErrors, click.Group):
    """A group whose commands are :class:`PATCommand` by default; its errors, click's
    own included (an unknown command, a bad option), are redacted like theirs."""

    command_class = PATCommand
