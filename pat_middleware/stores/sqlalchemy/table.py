"""The tokens table: :func:`token_table`, the default :data:`pat_tokens` in
:data:`metadata` (for Alembic's ``target_metadata``), and :class:`Schema`,
which creates and drops it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, MetaData, PrimaryKeyConstraint, String, Table, Text, inspect
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.schema import BaseDDLElement, CreateColumn, SchemaItem
from sqlalchemy.sql.compiler import DDLCompiler

__all__ = [
    "DEFAULT_TABLE",
    "PARTIAL_INDEX_DIALECTS",
    "Schema",
    "changed_at_index",
    "live_name_index",
    "metadata",
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
    """Define the tokens table ``name`` (with its indexes) in ``metadata`` and return it."""
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
    return table


#: Metadata holding the default table, for Alembic's ``target_metadata``.
metadata = MetaData()
#: The default table, ``pat_tokens``, in :data:`metadata`.
pat_tokens = token_table(metadata)


class Schema:
    """Create/drop the table with its indexes; idempotent (a lost creation race is retried).

    ``create`` also brings an older table up to date: ``ALTER TABLE ... ADD
    COLUMN changed_at`` and its index (release 0.1), ``resources`` (fine-grained
    tokens), when a column is missing.
    """

    def __init__(self, table: Table) -> None:
        self.table = table

    def create(self, conn: Connection) -> None:
        table = self.table
        table.create(conn, checkfirst=True)
        present = {col["name"] for col in inspect(conn).get_columns(table.name, schema=table.schema)}
        for missing in ("changed_at", "resources"):
            if missing not in present:
                column = CreateColumn(table.c[missing]).compile(dialect=conn.dialect)
                name = conn.dialect.identifier_preparer.format_table(table)
                conn.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN {column}")
        index = next(i for i in table.indexes if i.name == changed_at_index(table.name))
        index.create(conn, checkfirst=True)

    def drop(self, conn: Connection) -> None:
        self.table.drop(conn, checkfirst=True)
