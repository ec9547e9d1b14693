"""The tables: :func:`token_table` (the tokens table, with its security log
``<name>_log`` and sent notices ``<name>_notices`` next to it), the default
:data:`pat_tokens` in :data:`metadata` (for Alembic's ``target_metadata``), and
:class:`Schema`, which creates, upgrades and drops them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    cast,
    func,
    inspect,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import Connection
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.schema import BaseDDLElement, CreateColumn, SchemaItem
from sqlalchemy.sql.compiler import DDLCompiler

__all__ = [
    "DEFAULT_TABLE",
    "PARTIAL_INDEX_DIALECTS",
    "Schema",
    "changed_at_index",
    "companions",
    "live_name_index",
    "metadata",
    "name_index",
    "pat_tokens",
    "token_table",
]

DEFAULT_TABLE = "pat_tokens"

#: ``changed_at`` (the feed's stamp) on MySQL/MariaDB: to the microsecond, like elsewhere.
_MYSQL_MICROS = mysql.DATETIME(fsp=6)
#: Dialects with partial (filtered) indexes the live-name rule can use.
PARTIAL_INDEX_DIALECTS = ("postgresql", "sqlite")


def live_name_index(table_name: str) -> str:
    return f"uq_{table_name}_live_name"


def changed_at_index(table_name: str) -> str:
    return f"ix_{table_name}_changed_at"


def _dialect_is(*names: str, negate: bool = False) -> Any:
    """A ``ddl_if`` callable: create the index only on (or, ``negate``, not on) these dialects."""

    def check(ddl: BaseDDLElement, target: SchemaItem | str, bind: Connection | None, **kw: Any) -> bool:
        return (kw["dialect"].name in names) != negate

    return check


def _has_partial_indexes(
    ddl: BaseDDLElement,
    target: SchemaItem | str,
    bind: Connection | None,
    tables: list[Table] | None = None,
    state: Any | None = None,
    *,
    dialect: Dialect,
    compiler: DDLCompiler | None = None,
    checkfirst: bool = False,
    **kw: Any,
) -> bool:
    """The live-name index is created only where the dialect has partial indexes."""
    return dialect.name in PARTIAL_INDEX_DIALECTS


def token_table(metadata: MetaData, name: str = DEFAULT_TABLE, *, schema: str | None = None) -> Table:
    """Define the tokens table ``name`` (with its indexes) in ``metadata`` and return it.

    Its companions go into ``metadata`` too: the security log ``<name>_log`` and
    the sent notices ``<name>_notices`` (:func:`companions`)."""
    table = Table(
        name,
        metadata,
        Column("id", String(12), nullable=False),
        Column("user_id", String(255), nullable=False),
        Column("name", String(255), nullable=False),
        Column("description", Text, nullable=False, default=""),
        Column("scopes", JSON, nullable=False),
        Column("hash", Text, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("expires_at", DateTime(timezone=True), nullable=True),
        Column("last_used_at", DateTime(timezone=True), nullable=True),
        Column("last_used_ips", JSON, nullable=False),
        Column("revoked_at", DateTime(timezone=True), nullable=True),
        Column("family_id", String(12), nullable=False),
        Column("rotated_from", String(12), nullable=True),
        Column("allowed_cidrs", JSON, nullable=False),
        Column("changed_at", DateTime(timezone=True).with_variant(_MYSQL_MICROS, "mysql", "mariadb")),
        # NULL: every resource; else a JSON array of resource ids.
        Column("resources", JSON(none_as_null=True), nullable=True),
        PrimaryKeyConstraint("id", name=f"pk_{name}"),
        schema=schema,
    )
    c = table.c
    Index(f"ix_{name}_user_id", c.user_id)
    Index(f"ix_{name}_family_id", c.family_id)
    Index(f"ix_{name}_expires_at", c.expires_at)
    Index(changed_at_index(name), c.changed_at)
    Index(
        live_name_index(name),
        c.user_id,
        c.name,
        unique=True,
        postgresql_where=c.revoked_at.is_(None),
        sqlite_where=c.revoked_at.is_(None),
    ).ddl_if(callable_=_has_partial_indexes)
    # Administration pages (release 0.2): each sort order and its cursor is a range of
    # one index. On PostgreSQL ids are ordered COLLATE "C" (byte order, as every store sorts).
    activity = func.coalesce(c.last_used_at, c.created_at)
    byte_id = c.id.collate("C")
    Index(f"ix_{name}_created", c.created_at, byte_id).ddl_if(callable_=_dialect_is("postgresql"))
    Index(f"ix_{name}_created", c.created_at, c.id).ddl_if(callable_=_dialect_is("postgresql", negate=True))
    Index(f"ix_{name}_activity", activity, byte_id).ddl_if(callable_=_dialect_is("postgresql"))
    Index(f"ix_{name}_activity", activity, c.id).ddl_if(callable_=_dialect_is("sqlite"))
    scopes = cast(c.scopes, postgresql.JSONB)  # "holds one of these scopes": ?|, answered by GIN
    Index(f"ix_{name}_scopes", scopes, postgresql_using="gin").ddl_if(callable_=_dialect_is("postgresql"))
    _log_table(metadata, name, schema)
    _notice_table(metadata, name, schema)
    return table


def _byte_ordered(length: int) -> String:
    """A string column compared byte by byte (COLLATE "C" on PostgreSQL)."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


def _log_table(metadata: MetaData, name: str, schema: str | None) -> Table:
    """The security log next to the tokens table ``name``: ``<name>_log``."""
    table = Table(
        f"{name}_log",
        metadata,
        Column("id", _byte_ordered(22), nullable=False),  # sorts as its moment
        Column("at", DateTime(timezone=True), nullable=False),
        Column("kind", String(32), nullable=False),
        Column("token_id", String(64), nullable=True),
        Column("user_id", String(255), nullable=True),
        Column("actor", String(255), nullable=True),
        Column("client_ip", String(64), nullable=True),
        Column("reason", String(255), nullable=True),
        Column("details", JSON, nullable=False),
        PrimaryKeyConstraint("id", name=f"pk_{name}_log"),
        schema=schema,
    )
    c = table.c
    Index(f"ix_{name}_log_user", c.user_id, c.id)  # a user's log, newest first
    Index(f"ix_{name}_log_token", c.token_id, c.id)  # a token's
    Index(f"ix_{name}_log_at", c.at)  # pruning
    return table


def _notice_table(metadata: MetaData, name: str, schema: str | None) -> Table:
    """Notices already sent, next to the tokens table ``name``: ``<name>_notices``."""
    table = Table(
        f"{name}_notices",
        metadata,
        Column("token_id", String(64), nullable=False),
        Column("key", String(255), nullable=False),
        Column("until", DateTime(timezone=True), nullable=False),
        PrimaryKeyConstraint("token_id", "key", name=f"pk_{name}_notices"),
        schema=schema,
    )
    Index(f"ix_{name}_notices_until", table.c.until)
    return table


def companions(table: Table) -> tuple[Table, Table]:
    """The log and notice tables :func:`token_table` defined next to ``table``."""
    prefix = f"{table.schema}." if table.schema else ""
    tables = table.metadata.tables
    return tables[f"{prefix}{table.name}_log"], tables[f"{prefix}{table.name}_notices"]


#: Metadata holding the default table, for Alembic's ``target_metadata``.
metadata = MetaData()
#: The default table, ``pat_tokens``, in :data:`metadata`.
pat_tokens = token_table(metadata)


def _write_lock(conn: Connection) -> None:
    """SQLite's drivers run DDL outside a transaction: take the write lock first, so
    concurrent creators (threads, tasks, processes) run one after the other."""
    try:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    except sa_exc.OperationalError as error:
        if "within a transaction" not in str(error.orig):  # the driver began one already
            raise


def name_index(table_name: str) -> str:
    return f"ix_{table_name}_name"


def _name_search(conn: Connection, table: Table) -> None:
    """``name_contains`` on PostgreSQL (``lower(name) LIKE '%...%'``): a trigram index
    when the ``pg_trgm`` extension is installed in the database (a rare substring is
    then an index search), else statistics on ``lower(name)`` (PostgreSQL 14+), so
    the planner knows how common a substring is and pages a common one along the
    ``created_at`` index instead of reading the table."""
    quote = conn.dialect.identifier_preparer.quote
    target = conn.dialect.identifier_preparer.format_table(table)
    prefix = f"{quote(table.schema)}." if table.schema else ""
    trigrams = conn.exec_driver_sql("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'").first()
    if trigrams is not None:
        index = quote(name_index(table.name))
        conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {index} ON {target} USING gin (lower(name) gin_trgm_ops)")
    elif (conn.dialect.server_version_info or (0,)) >= (14,):
        statistics = prefix + quote(f"st_{table.name}_name")
        conn.exec_driver_sql(f"CREATE STATISTICS IF NOT EXISTS {statistics} ON (lower(name)) FROM {target}")


def _index_names(conn: Connection, table: Table) -> set[str]:
    """The names of the indexes on ``table`` (SQLAlchemy does not reflect SQLite's
    expression indexes, so SQLite's catalogue is read directly)."""
    if conn.dialect.name == "sqlite":
        catalogue = (
            f"{conn.dialect.identifier_preparer.quote(table.schema)}.sqlite_master" if table.schema else "sqlite_master"
        )
        rows = conn.exec_driver_sql(
            f"SELECT name FROM {catalogue} WHERE type = 'index' AND tbl_name = ?", (table.name,)
        )
        return {row[0] for row in rows}
    return {str(ix["name"]) for ix in inspect(conn).get_indexes(table.name, schema=table.schema)}


class Schema:
    """Create/drop the tables with their indexes; idempotent (a lost creation race is retried).

    ``create`` also brings an older database up to date: ``ALTER TABLE ... ADD
    COLUMN changed_at`` (release 0.1), ``resources`` (fine-grained tokens) when a
    column is missing, then every index and table it lacks (the administration
    indexes, the log and notice tables of release 0.2).
    """

    def __init__(self, table: Table) -> None:
        self.table = table
        self.tables = (table, *companions(table))

    def create(self, conn: Connection) -> None:
        table = self.table
        if conn.dialect.name == "sqlite":
            _write_lock(conn)
        table.create(conn, checkfirst=True)
        present = {col["name"] for col in inspect(conn).get_columns(table.name, schema=table.schema)}
        for missing in ("changed_at", "resources"):
            if missing not in present:
                column = CreateColumn(table.c[missing]).compile(dialect=conn.dialect)
                name = conn.dialect.identifier_preparer.format_table(table)
                conn.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN {column}")
        present_indexes = _index_names(conn, table)
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            if index.name not in present_indexes:
                index.create(conn)  # each index's ddl_if still decides
        for companion in self.tables[1:]:
            companion.create(conn, checkfirst=True)
        if conn.dialect.name == "postgresql":
            _name_search(conn, table)

    def drop(self, conn: Connection) -> None:
        for table in reversed(self.tables):
            table.drop(conn, checkfirst=True)
