"""The store's operations, written once as plain sync functions of a ``Connection``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, CursorResult, RowMapping
from sqlalchemy.sql import Executable

from pat_middleware.core.audit import LogEntry, LogQuery
from pat_middleware.core.models import TokenRecord, utc
from pat_middleware.core.query import TokenQuery
from pat_middleware.errors import NameTaken
from pat_middleware.stores._common import check_changes, merge_ips
from pat_middleware.stores.base import VALIDITY_FIELDS
from pat_middleware.stores.sqlalchemy.errors import Errors, cause
from pat_middleware.stores.sqlalchemy.statements import Statements

__all__ = ["Operations"]

_Key = Literal["user", "family", "lineage"]


def _ids_in_order(rows: Iterable[RowMapping]) -> list[str]:
    return [r["id"] for r in sorted(rows, key=lambda r: (utc(r["created_at"]), r["id"]))]


class Operations:
    """The store's operations, each a plain function of a sync ``Connection``.

    A runner calls one inside the transaction it opened (a read: on a
    connection in autocommit) and commits when it returns; the async store
    runs the very same method through ``AsyncConnection.run_sync``. So each
    SQL operation has one implementation, for both faces and every dialect.
    """

    def __init__(self, statements: Statements, errors: Errors) -> None:
        self.s = statements
        self.errors = errors

    def get(self, conn: Connection, token_id: str) -> TokenRecord | None:
        row = conn.execute(self.s.get, {"b_id": token_id}).mappings().first()
        return None if row is None else self.s.record(row)

    def list_by(self, conn: Connection, key: Literal["user", "family"], value: str) -> list[TokenRecord]:
        statement = self.s.by_user if key == "user" else self.s.by_family
        return [self.s.record(r) for r in conn.execute(statement, {"b_key": value}).mappings()]

    def list_expiring(self, conn: Connection, start: datetime, end: datetime) -> list[TokenRecord]:
        rows = conn.execute(self.s.expiring, {"b_start": self.s.dt(start), "b_end": self.s.dt(end)}).mappings()
        return [self.s.record(r) for r in rows]

    def _write(
        self, conn: Connection, statement: Executable, params: Mapping[str, Any], name: str | None, token_id: str
    ) -> CursorResult[Any]:
        """Run a statement that may break the live-name rule or the primary key:
        its IntegrityError becomes ``NameTaken(name)`` or a ValueError naming ``token_id``."""
        try:
            return conn.execute(statement, params)
        except sa_exc.IntegrityError as error:
            raise self.errors.integrity(error, name, token_id) from cause(error)

    def _check_name(self, conn: Connection, user_id: str, name: str, token_id: str) -> None:
        """Where no partial index exists, look for a live namesake under a row lock."""
        if self.s.names_in_transaction:
            params = {"b_user": user_id, "b_name": name, "b_id": token_id}
            if conn.execute(self.s.live_name_taken, params).first() is not None:
                raise NameTaken(name)

    def insert(self, conn: Connection, record: TokenRecord) -> None:
        self._check_name(conn, record.user_id, record.name, record.id)
        self._write(conn, self.s.insert, self.s.row(record), record.name, record.id)

    def update(self, conn: Connection, token_id: str, changes: Mapping[str, Any]) -> TokenRecord | None:
        clean = check_changes(changes)
        if clean:
            if "name" in clean and self.s.names_in_transaction:
                current = conn.execute(self.s.get, {"b_id": token_id}).mappings().first()
                if current is not None:
                    self._check_name(conn, current["user_id"], clean["name"], token_id)
            params = {**self.s.changes(clean), "b_id": token_id}
            statement = self.s.update_live if VALIDITY_FIELDS.isdisjoint(clean) else self.s.update_live_stamped
            if self._write(conn, statement, params, clean.get("name"), token_id).rowcount != 1:
                return None
        record = self.get(conn, token_id)
        return record if record is not None and record.revoked_at is None else None

    def revoke(self, conn: Connection, token_id: str, at: datetime) -> list[str]:
        chain = list(conn.execute(self.s.chain, {"b_id": token_id}).mappings())
        me = next((r for r in chain if r["id"] == token_id), None)
        if me is None:
            return []
        extra = {"b_created": self.s.dt(me["created_at"]), "b_ids": [r["id"] for r in chain]}
        return self._revoke(conn, "lineage", me["family_id"], at, extra)

    def revoke_by(self, conn: Connection, key: Literal["user", "family"], value: str, at: datetime) -> list[str]:
        return self._revoke(conn, key, value, at, {})

    def _revoke(self, conn: Connection, key: _Key, value: str, at: datetime, extra: Mapping[str, Any]) -> list[str]:
        params = {"b_key": value, "b_at": self.s.dt(at), **extra}
        if self.s.returning:
            return _ids_in_order(conn.execute(self.s.revoke_by[key], params).mappings())
        ids = _ids_in_order(conn.execute(self.s.revocable_by[key], params).mappings())
        if ids:
            conn.execute(self.s.revoke_ids, {"b_ids": ids, "b_at": params["b_at"]})
        return ids

    def rotate(self, conn: Connection, old_id: str, new: TokenRecord, revoke_at: datetime) -> bool:
        if conn.execute(self.s.revoke_live, {"b_id": old_id, "b_at": self.s.dt(revoke_at)}).rowcount != 1:
            conn.rollback()  # nothing to keep: end the transaction without a COMMIT
            return False
        self.insert(conn, new)
        return True

    def changes_since(self, conn: Connection, since: datetime) -> list[tuple[str, datetime]]:
        rows = conn.execute(self.s.changed_since, {"b_since": self.s.dt(since)}).mappings()
        return [(r["id"], utc(r["changed_at"])) for r in rows]

    def touch(self, conn: Connection, token_id: str, at: datetime, ip: str | None, keep_ips: int) -> bool:
        row = conn.execute(self.s.touch_read, {"b_id": token_id}).mappings().first()
        if row is None:
            return False
        known = tuple(row["last_used_ips"] or ())
        ips = list(merge_ips(known, ip, keep_ips))
        conn.execute(self.s.touch_write, {"b_id": token_id, "b_at": self.s.dt(at), "b_ips": ips})
        return ip is not None and ip not in known

    def purge(self, conn: Connection, before: datetime) -> list[str]:
        params = {"b_before": self.s.dt(before)}
        if self.s.returning:
            return _ids_in_order(conn.execute(self.s.purge, params).mappings())
        ids = _ids_in_order(conn.execute(self.s.purgeable, params).mappings())
        if ids:
            conn.execute(self.s.delete_ids, {"b_ids": ids})
        return ids

    def purgeable(self, conn: Connection, before: datetime) -> list[str]:
        """The ids :meth:`purge` would delete now: the same ``WHERE``, as a plain SELECT."""
        return _ids_in_order(conn.execute(self.s.purge_selection, {"b_before": self.s.dt(before)}).mappings())

    # -- administration and the security log --

    def search(self, conn: Connection, query: TokenQuery) -> list[TokenRecord]:
        return [self.s.record(r) for r in conn.execute(self.s.search(query)).mappings()]

    def read_log(self, conn: Connection, query: LogQuery) -> list[LogEntry]:
        return [self.s.log_entry(r) for r in conn.execute(self.s.read_log(query)).mappings()]

    def append_log(self, conn: Connection, entries: list[LogEntry]) -> None:
        rows = [self.s.log_row(e) for e in entries]
        if not rows:
            return
        if self.s.insert_log_or_nothing is not None:
            conn.execute(self.s.insert_log_or_nothing, rows)
            return
        kept = {r["id"] for r in conn.execute(self.s.log_ids, {"b_ids": [r["id"] for r in rows]}).mappings()}
        fresh = {r["id"]: r for r in rows if r["id"] not in kept}  # (one row per id)
        if fresh:
            conn.execute(self.s.insert_log, list(fresh.values()))

    def prune_log(self, conn: Connection, before: datetime) -> int:
        params = {"b_before": self.s.dt(before)}
        gone = conn.execute(self.s.prune_log, params).rowcount
        conn.execute(self.s.prune_notices, params)
        return gone

    def claim_notice(self, conn: Connection, token_id: str, key: str, until: datetime) -> bool:
        row = {"token_id": token_id, "key": key, "until": self.s.dt(until)}
        if self.s.claim_or_nothing is not None:
            result = conn.execute(self.s.claim_or_nothing, row)
            return result.first() is not None if self.s.claim_returns else result.rowcount == 1
        try:
            with conn.begin_nested():  # elsewhere: the primary key decides, in a savepoint
                conn.execute(self.s.claim, row)
        except sa_exc.IntegrityError:
            return False
        return True
