"""``pat db init``: create or upgrade the store's schema (SQL stores; the others need none)."""

from __future__ import annotations

import click

from pat_middleware.cli.context import current_auth
from pat_middleware.cli.errors import PATGroup, store_name
from pat_middleware.cli.output import json_out
from pat_middleware.cli.params import json_option
from pat_middleware.core.health import exception_line
from pat_middleware.errors import PATError

__all__ = ["db"]


@click.group(cls=PATGroup)
def db() -> None:
    """Database schema."""


@db.command("init")
@json_option
def db_init(as_json: bool) -> None:
    """Create the store's tables and indexes (idempotent)."""
    auth = current_auth()
    create_schema = getattr(auth.store, "create_schema", None)
    if create_schema is None:
        if as_json:
            json_out({"store": store_name(auth), "schema": "not needed"})
        else:
            click.echo(f"{store_name(auth)} needs no schema; it creates what it needs on first use")
        return
    try:
        create_schema()
    except PATError:
        raise
    except Exception as exc:  # a driver error: one line, no traceback
        raise click.ClickException(f"could not create the schema: {exception_line(exc)}") from None
    if as_json:
        json_out({"store": store_name(auth), "schema": "ready"})
    else:
        click.echo(f"schema ready: {store_name(auth)}")
