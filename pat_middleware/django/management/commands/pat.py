"""``manage.py pat create|list|show|rename|expire|resources|revoke|revoke-all|rotate|verify|expiring|purge|scan``
and ``manage.py pat admin|sweep|notify`` (every user's tokens, the inactivity sweep, expiry notices).

The ``pat`` command's own click commands (one implementation, same options,
output and exit codes), on the engine of ``settings.PAT`` (``get_auth()``).
``db init`` is left out: ``manage.py migrate`` creates the table. From code:
``call_command("pat", "list", "42")`` (a failure raises ``CommandError``). The
security-log entries of a command's actions are written before it returns.
"""

from __future__ import annotations

import os
from argparse import Namespace
from collections.abc import Sequence
from typing import Any

import click
from django.core.management.base import BaseCommand, CommandError, CommandParser

from pat_middleware.cli import COMMANDS, PATGroup, register_commands
from pat_middleware.django.conf import flush_log, get_auth

__all__ = ["Command", "pat_group"]


@click.group("pat", cls=PATGroup)
def pat_group() -> None:
    """Manage personal access tokens in the Django project's token store (settings.PAT)."""


register_commands(pat_group, load_auth=get_auth, commands=[c for c in COMMANDS if c.name != "db"])


class _ClickArguments(CommandParser):
    """Leaves every argument to click (``call_command("pat", "--help")`` too)."""

    def parse_args(self, args: Sequence[str] | None = None, namespace: object = None) -> Namespace:  # type: ignore[override]
        return Namespace(
            args=list(args or ()), verbosity=1, settings=None, pythonpath=None, traceback=False,
            no_color=False, force_color=False, skip_checks=True,
        )  # fmt: skip


class Command(BaseCommand):
    """Django's face of :data:`pat_group`: the arguments go to click untouched."""

    help = "Manage personal access tokens: manage.py pat --help"

    def run_from_argv(self, argv: list[str]) -> None:
        """``manage.py pat ...``: click parses, prints and exits with its own status."""
        prog = f"{os.path.basename(argv[0])} {argv[1]}"
        try:
            pat_group.main(args=argv[2:], prog_name=prog)
        finally:
            flush_log()

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        return _ClickArguments(prog=f"{os.path.basename(prog_name)} {subcommand}", add_help=False, **kwargs)

    def print_help(self, prog_name: str, subcommand: str) -> None:
        """``manage.py help pat``: click's help of the group."""
        pat_group.main(args=["--help"], prog_name=f"{os.path.basename(prog_name)} {subcommand}", standalone_mode=False)

    def handle(self, *args: str, **options: Any) -> None:
        """``call_command("pat", ...)``: click's errors become ``CommandError``."""
        try:
            pat_group.main(args=list(args), prog_name="manage.py pat", standalone_mode=False)
        except click.exceptions.Exit as exc:
            if exc.exit_code:
                raise CommandError(f"pat exited with status {exc.exit_code}", returncode=exc.exit_code) from None
        except click.ClickException as exc:
            raise CommandError(exc.format_message(), returncode=exc.exit_code) from None
        except click.exceptions.Abort:
            raise CommandError("Aborted") from None
        finally:
            flush_log()
