"""``pat scan``: find tokens in files and say which are live (``--revoke`` revokes them)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import click

from pat_middleware.auth import PATAuth
from pat_middleware.cli.context import current_auth
from pat_middleware.cli.errors import PATCommand, redact_path, store_name
from pat_middleware.cli.listeners import invalidated
from pat_middleware.cli.output import json_out, printable_text, utc_now
from pat_middleware.cli.params import json_option
from pat_middleware.cli.scan import files, tokens_in_file
from pat_middleware.core.hashing import Argon2Hasher, HMACHasher
from pat_middleware.core.models import TokenRecord
from pat_middleware.core.tokens import parse
from pat_middleware.errors import TokenNotFound

__all__ = ["Finding", "scan"]


@dataclass(frozen=True)
class Finding:
    """A token found by ``pat scan``: where, which id, what the store says."""

    path: str
    line: int
    prefix: str
    key_id: str
    status: str

    def __str__(self) -> str:
        return f"{printable_text(redact_path(self.path))}:{self.line}: {self.prefix}_{self.key_id}… {self.status}"

    def as_dict(self) -> dict[str, object]:
        return {
            "path": redact_path(self.path),
            "line": self.line,
            "prefix": self.prefix,
            "key_id": self.key_id,
            "status": self.status,
        }


#: ``scan`` statuses of a token whose record is live but whose secret this CLI could not confirm.
_UNCONFIRMED = ("id known, secret does not match (not revoked)", "id known, hashed by another hasher: not checked")


def _scheme(hasher: object) -> str | None:
    """The first ``$`` field of the hashes ``hasher`` writes, when known."""
    if isinstance(hasher, HMACHasher):
        return "hmac-sha256"
    if isinstance(hasher, Argon2Hasher):
        return "argon2"
    return None


def _token_status(auth: PATAuth, token: str, prefix: str, now: datetime) -> tuple[str, TokenRecord | None]:
    """What the store says about a found token. The secret is checked before anything is called ours;
    a live record whose secret does not check comes back too (with an ``_UNCONFIRMED`` status)."""
    parts = parse(token, prefix)
    if prefix != auth.prefix:
        return "other prefix, not checked", None
    try:
        record = auth.manager.get(parts.key_id)
    except TokenNotFound:
        return "not in the store", None
    if not auth.hasher.verify(record.hash, parts.secret):
        ours = _scheme(auth.hasher)
        stored = record.hash.split("$")[1] if record.hash.startswith("$") else ""
        if ours is not None and not stored.startswith(ours):
            return _UNCONFIRMED[1], record
        return _UNCONFIRMED[0], record
    return record.state(now), record


def _scan_note(path: Path, note: str) -> None:
    click.echo(f"{printable_text(redact_path(str(path)))}: {note}", err=True)


@click.command(cls=PATCommand)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--revoke", "do_revoke", is_flag=True, help="Revoke the found tokens that are live in the store.")
@click.option("--any-prefix", is_flag=True, help="Report tokens of any prefix, not only the store's.")
@json_option
def scan(paths: tuple[str, ...], do_revoke: bool, any_prefix: bool, as_json: bool) -> None:
    """Find tokens in files and directories (printed as prefix + key id, never whole).

    Exits 1 when a live token was found and not revoked, or when a live token's id was
    found with a secret this CLI could not confirm (a forgery, or not the app's hasher:
    use --app): --revoke revokes only what it confirmed.
    """
    auth = current_auth()
    now = utc_now(auth)
    found = live = unconfirmed = 0
    seen: dict[str, str] = {}  # a token seen twice is looked up (and revoked) once
    findings: list[Finding] = []
    for path in files(paths):
        for line, prefix, token in tokens_in_file(path, None if any_prefix else auth.prefix, _scan_note):
            status = seen.get(token)
            if status is None:
                status, record = _token_status(auth, token, prefix, now)
                if record is not None and status in _UNCONFIRMED:
                    if record.is_active(utc_now(auth)):  # --revoke may have revoked it meanwhile
                        unconfirmed += 1
                elif record is not None and record.is_active(now):  # active, or rotated within its grace
                    if do_revoke:
                        auth.manager.revoke(record.id)
                        invalidated()
                        status = f"{status}, now revoked"
                    else:
                        live += 1
                seen[token] = status
            found += 1
            finding = Finding(str(path), line, prefix, parse(token, prefix).key_id, status)
            findings.append(finding)
            if not as_json:
                click.echo(str(finding))
    store = store_name(auth)
    if as_json:
        json_out(
            {
                "store": store,
                "findings": [f.as_dict() for f in findings],
                "occurrences": found,
                "tokens": len(seen),
                "live_not_revoked": live,
                "live_id_unconfirmed": unconfirmed,
            }
        )
    summary = f"{found} occurrence(s) of {len(seen)} token(s) in {store}, {live} live and not revoked"
    click.echo(summary, err=True)
    if unconfirmed:
        click.echo(
            f"{unconfirmed} token(s) carry the id of a live token but a secret this CLI could not confirm "
            "(not revoked): a forgery, or this CLI does not hash like the app (use --app MODULE:ATTR, or "
            "PAT_HMAC_KEY); check them with the app's settings",
            err=True,
        )
    if live or unconfirmed:
        sys.exit(1)
