"""The table's statements, built once per store and bound by name, and the
conversions between rows and :class:`~pat_middleware.core.models.TokenRecord`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, delete, func, insert, literal, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.sql import ColumnElement, Executable, Select
from sqlalchemy.sql.elements import TextClause

from pat_middleware.core.audit import LogEntry, LogQuery
from pat_middleware.core.models import TokenRecord, utc
from pat_middleware.core.query import TokenQuery
from pat_middleware.stores._common import entry_from_row, normalize_record, record_from_row
from pat_middleware.stores._sql_query import POSTGRESQL, SQLITE, Clause, Flavour, log_sql, search_sql
from pat_middleware.stores.sqlalchemy.table import PARTIAL_INDEX_DIALECTS, companions

__all__ = ["Statements"]


def _server_now(dialect: Dialect) -> ColumnElement[Any]:
    """The database's clock as a ``changed_at`` value, to the microsecond where it can be."""
    if dialect.name == "sqlite":  # 'now' in the column's text format (SQLite keeps milliseconds)
        return func.strftime("%Y-%m-%d %H:%M:%f", "now").concat(literal("000"))
    if dialect.name in ("mysql", "mariadb"):  # UTC, like every naive value this store writes there
        return func.utc_timestamp(6)
    return func.now()


def _flavour(dialect: Dialect) -> Flavour:
    """How administration queries are asked of this database (see ``stores._sql_query``)."""
    if dialect.name == "postgresql":
        return POSTGRESQL
    if dialect.name == "sqlite":
        return SQLITE
    return Flavour()


def _insert_or_nothing(table: Table, dialect: Dialect, returning: bool = False) -> Executable | None:
    """An INSERT that skips a row whose key is kept already, or None where the dialect
    has none; with ``returning``, it returns the key of a row it inserted where it can
    (an INSERT's rowcount is not always reported)."""
    key = list(table.primary_key)[:1] if returning else []
    if dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing().returning(*key)
    if dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing().returning(*key)
    if dialect.name in ("mysql", "mariadb"):
        return insert(table).prefix_with("IGNORE")
    return None


class Statements:
    """The table's select/insert/update/delete constructs (built once, bound by name)
    and the conversions between rows and :class:`TokenRecord`."""

    def __init__(self, table: Table, dialect: Dialect) -> None:
        self.table = t = table
        c = t.c
        self.naive_datetimes = dialect.name in ("mysql", "mariadb")
        self.returning = bool(dialect.update_returning and dialect.delete_returning)
        self.names_in_transaction = dialect.name not in PARTIAL_INDEX_DIALECTS

        by_id = c.id == bindparam("b_id")
        live = c.revoked_at.is_(None)
        # Ids in byte order, as the other stores sort them, whatever the database's collation.
        id_order = c.id.collate("C") if dialect.name == "postgresql" else c.id
        ordered = (c.created_at, id_order)

        def revocable(param: str) -> ColumnElement[bool]:
            return or_(c.revoked_at.is_(None), c.revoked_at > bindparam(param))

        # The record's columns only: lookups keep working on a table not yet given changed_at.
        record = select(*(col for col in t.c if col.name != "changed_at"))
        now = _server_now(dialect)
        self.get = record.where(by_id)
        self.by_user = record.where(c.user_id == bindparam("b_key")).order_by(*ordered)
        self.by_family = record.where(c.family_id == bindparam("b_key")).order_by(*ordered)
        self.changed_since = select(c.id, c.changed_at).where(c.changed_at >= bindparam("b_since"))
        self.expiring = (
            record.where(c.expires_at > bindparam("b_start"), c.expires_at <= bindparam("b_end"))
            .where(revocable("b_start"))
            .order_by(c.expires_at, id_order)
        )
        self.insert = insert(t)
        # SET comes from the execution parameters, so one construct serves every change set.
        self.update_live = update(t).where(by_id, live)
        self.update_live_stamped = self.update_live.values(changed_at=now)
        self.revoke_live = update(t).where(by_id, live).values(revoked_at=bindparam("b_at"), changed_at=now)
        self.live_name_taken = (
            select(c.id)
            .where(c.user_id == bindparam("b_user"), c.name == bindparam("b_name"), live)
            .where(c.id != bindparam("b_id"))
            .with_for_update()
        )
        self.touch_read = select(c.last_used_ips).where(by_id).with_for_update()
        self.touch_write = (
            update(t).where(by_id).values(last_used_at=bindparam("b_at"), last_used_ips=bindparam("b_ips"))
        )

        # Revoke-many and purge: one UPDATE/DELETE ... RETURNING where the dialect
        # has it, else lock the matching ids and change exactly those.
        ids = c.id.in_(bindparam("b_ids", expanding=True))
        gone = or_(c.revoked_at <= bindparam("b_before"), c.expires_at <= bindparam("b_before"))
        # A record and its predecessors (see stores.base) take two statements: its
        # rotated_from chain (a recursive SELECT; UNION stops at a cycle), then its
        # family's records on that chain or created before it (key "lineage"), so no
        # dialect has to accept a subquery on the very table it updates.
        head = select(c.id, c.rotated_from, c.family_id, c.created_at).where(by_id).cte("chain", recursive=True)
        x = t.alias("x")
        chain = head.union(
            select(x.c.id, x.c.rotated_from, x.c.family_id, x.c.created_at).where(x.c.id == head.c.rotated_from)
        )
        self.chain = select(chain.c.id, chain.c.family_id, chain.c.created_at)
        matching: dict[str, tuple[ColumnElement[bool], ...]] = {
            "user": (c.user_id == bindparam("b_key"),),
            "family": (c.family_id == bindparam("b_key"),),
            "lineage": (c.family_id == bindparam("b_key"), or_(c.created_at < bindparam("b_created"), ids)),
        }
        revoke = update(t).values(revoked_at=bindparam("b_at"), changed_at=now)
        returned = (c.id, c.created_at) if self.returning else ()  # no RETURNING where there is none
        self.revoke_by: dict[str, Executable] = {
            k: revoke.where(*where, revocable("b_at")).returning(*returned) for k, where in matching.items()
        }
        self.revocable_by = {
            k: select(c.id, c.created_at).where(*where, revocable("b_at")).with_for_update()
            for k, where in matching.items()
        }
        self.revoke_ids = revoke.where(ids, revocable("b_at"))
        self.purge: Executable = delete(t).where(gone).returning(*returned)
        self.purge_selection = select(c.id, c.created_at).where(gone)  # purge's rows, read only
        self.purgeable = self.purge_selection.with_for_update()
        self.delete_ids = delete(t).where(ids)

        # Administration: the security log and sent notices (tables next to the tokens table).
        self.log, self.notices = log, notices = companions(t)
        self.flavour = _flavour(dialect)
        self.record_select = record
        self.insert_log = insert(log)
        self.insert_log_or_nothing = _insert_or_nothing(log, dialect)
        self.log_ids = select(log.c.id).where(log.c.id.in_(bindparam("b_ids", expanding=True)))
        self.prune_log = delete(log).where(log.c.at < bindparam("b_before"))
        self.prune_notices = delete(notices).where(notices.c.until < bindparam("b_before"))
        self.claim = insert(notices)
        self.claim_or_nothing = _insert_or_nothing(notices, dialect, returning=True)
        self.claim_returns = dialect.name in ("postgresql", "sqlite")

    def _where(self, clause: Clause) -> TextClause:
        """The clause's conditions with typed parameters (timestamps as the columns keep them)."""
        moment = self.table.c.created_at.type
        params = [bindparam(k, v, type_=moment if isinstance(v, datetime) else None) for k, v in clause.params.items()]
        return text(clause.where).bindparams(*params)

    def search(self, query: TokenQuery) -> Select[Any]:
        """The SELECT answering an administration query (one page, in its order)."""
        clause = search_sql(query, self.flavour, self.dt)
        return self.record_select.where(self._where(clause)).order_by(text(clause.order)).limit(query.limit)

    def read_log(self, query: LogQuery) -> Select[Any]:
        """The SELECT answering a log query, newest first."""
        clause = log_sql(query, self.dt)
        return select(self.log).where(self._where(clause)).order_by(self.log.c.id.desc()).limit(query.limit)

    # -- conversions --

    def dt(self, value: datetime | None) -> datetime | None:
        """A datetime ready to bind: UTC, naive where the column keeps no zone."""
        if value is None:
            return None
        value = utc(value)
        return value.replace(tzinfo=None) if self.naive_datetimes else value

    def row(self, record: TokenRecord) -> dict[str, Any]:
        """Insert parameters for ``record``."""
        r = normalize_record(record)
        return {
            "id": r.id,
            "user_id": r.user_id,
            "name": r.name,
            "description": r.description,
            "scopes": list(r.scopes),
            "hash": r.hash,
            "created_at": self.dt(r.created_at),
            "expires_at": self.dt(r.expires_at),
            "last_used_at": self.dt(r.last_used_at),
            "last_used_ips": list(r.last_used_ips),
            "revoked_at": self.dt(r.revoked_at),
            "family_id": r.family_id,
            "rotated_from": r.rotated_from,
            "allowed_cidrs": list(r.allowed_cidrs),
            "resources": None if r.resources is None else list(r.resources),
        }

    def changes(self, clean: Mapping[str, Any]) -> dict[str, Any]:
        """SET parameters for checked ``changes`` (see ``check_changes``)."""
        return {
            key: list(value) if isinstance(value, tuple) else self.dt(value) if key == "expires_at" else value
            for key, value in clean.items()
        }

    def log_row(self, entry: LogEntry) -> dict[str, Any]:
        """Insert parameters for a log entry."""
        return {
            "id": entry.id,
            "at": self.dt(entry.at),
            "kind": entry.kind,
            "token_id": entry.token_id,
            "user_id": entry.user_id,
            "actor": entry.actor,
            "client_ip": entry.client_ip,
            "reason": entry.reason,
            "details": entry.details,
        }

    log_entry = staticmethod(entry_from_row)

    #: The :class:`TokenRecord` of a table row (timestamps made aware UTC).
    record = staticmethod(record_from_row)
