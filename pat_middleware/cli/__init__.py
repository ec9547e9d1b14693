"""The ``pat`` command: manage tokens from a shell.

Every command finds its :class:`~pat_middleware.auth.PATAuth` through
:func:`current_auth`, so the same commands serve ``pat`` (the app's own
``PATAuth`` with ``--app module:attr`` / ``PAT_APP``, see :func:`load_app`;
else the store of ``--store`` / ``PAT_STORE_URL`` with the other ``PAT_*``
variables) and any other click group, such as ``flask pat``, through
:func:`register_commands`::

    register_commands(group, load_auth=lambda: current_app.extensions["pat"].auth)

Errors of the library (:class:`~pat_middleware.errors.PATError`) become one
line on stderr: exit 2 for bad input (usage, policy), exit 1 for the rest
(not found, revoked, store down, invalid token). Plaintext tokens are printed
only by ``create`` and ``rotate``, on stdout, once; ``verify`` reads the token
from stdin, never from the command line.
"""

from pat_middleware.cli.app import AppAuth, load_app
from pat_middleware.cli.commands import COMMANDS, main, register_commands
from pat_middleware.cli.context import DEFAULT_STORE_URL, current_auth
from pat_middleware.cli.errors import PATCommand, PATGroup, redact
from pat_middleware.core.durations import parse_duration

__all__ = [
    "COMMANDS",
    "DEFAULT_STORE_URL",
    "AppAuth",
    "PATCommand",
    "PATGroup",
    "current_auth",
    "load_app",
    "main",
    "parse_duration",
    "redact",
    "register_commands",
]
