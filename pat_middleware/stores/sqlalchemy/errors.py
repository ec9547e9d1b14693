"""Driver and pool errors turned into this library's: ``NameTaken``,
``ValueError`` and ``StoreUnavailable``, never with statement parameters."""

from __future__ import annotations

from typing import NoReturn

from sqlalchemy import Table
from sqlalchemy import exc as sa_exc

from pat_middleware.errors import NameTaken, StoreUnavailable
from pat_middleware.stores.sqlalchemy.table import companions, live_name_index

__all__ = ["Errors", "cause"]


def _missing_table(error: BaseException, table_name: str) -> bool:
    orig = getattr(error, "orig", None)
    if "42P01" in (getattr(orig, "sqlstate", None), getattr(orig, "pgcode", None)):
        return True
    text = str(orig).lower()
    return table_name.lower() in text and any(
        marker in text for marker in ("no such table", "doesn't exist", "does not exist")
    )


#: Columns a table from an older release lacks: ``changed_at`` (0.1), ``resources``.
_NEWER_COLUMNS = ("changed_at", "resources")


def _missing_column(error: BaseException) -> str | None:
    """The newer column the table lacks, when that is what ``error`` says."""
    orig = getattr(error, "orig", None)
    text = str(orig).lower()
    column = next((c for c in _NEWER_COLUMNS if c in text), None)
    if column is None:
        return None
    missing = "42703" in (getattr(orig, "sqlstate", None), getattr(orig, "pgcode", None)) or any(
        marker in text for marker in ("no such column", "has no column", "unknown column", "does not exist")
    )
    return column if missing else None


class Errors:
    """Turns driver and pool errors into this library's errors, without parameters."""

    def __init__(self, table: Table) -> None:
        self.table_name = table.name
        #: The log and notice tables next to it (release 0.2), which an older database lacks.
        self.companion_names = tuple(t.name for t in companions(table))
        self.live_name_index = live_name_index(table.name)
        self.primary_key_name = f"pk_{table.name}"

    @staticmethod
    def unreachable(error: BaseException) -> bool:
        """True for connection failures, pool timeouts and invalidated connections."""
        if isinstance(error, OSError):
            return True
        if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
            return True
        return isinstance(
            error,
            sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError | sa_exc.DisconnectionError,
        )

    def translate(self, error: BaseException) -> Exception | None:
        """The error to raise instead of ``error``, or None to let it through."""
        table = self.table_name
        column = _missing_column(error)
        if column is not None:
            return StoreUnavailable(
                f"the token table {table!r} lacks the {column} column (an older release): run "
                "`pat db init` (store.create_schema()) or add it to your migrations"
            )
        if _missing_table(error, table):
            text = str(getattr(error, "orig", error)).lower()
            companion = next((n for n in self.companion_names if n.lower() in text), None)
            what = f"the token table {table!r}" if companion is None else f"the token store's table {companion!r}"
            return StoreUnavailable(
                f"{what} does not exist: run `pat db init` (store.create_schema()) or add it to your migrations"
            )
        if isinstance(error, sa_exc.IntegrityError):
            return self.integrity(error, None, None)
        if isinstance(error, sa_exc.DataError):  # too long, NUL byte...: the driver's text may quote it
            return ValueError("the database rejected a value of the token record (DataError)")
        if self.unreachable(error):
            return StoreUnavailable(f"the token database is unavailable ({type(error).__name__})")
        return None

    def integrity(self, error: sa_exc.IntegrityError, name: str | None, token_id: str | None) -> Exception:
        """The error for a constraint violation by the write of token ``token_id`` named ``name``."""
        text = str(error.orig)
        table = self.table_name
        if self.live_name_index in text or (f"{table}.user_id" in text and f"{table}.name" in text):
            return NameTaken(name or "")
        if self.primary_key_name in text or f"{table}.id" in text or "'PRIMARY'" in text:
            return ValueError(f"a token with id {token_id!r} already exists")
        return ValueError("the database rejected the token record (integrity constraint)")

    def reraise(self, error: BaseException) -> NoReturn:
        """Raise the library's error for ``error`` (chained to the driver's), or ``error`` itself."""
        mapped = self.translate(error)
        if mapped is None:
            raise error
        raise mapped from cause(error)


def cause(error: BaseException) -> BaseException:
    """The driver's own error when there is one: SQLAlchemy's text would carry parameters."""
    orig = getattr(error, "orig", None)
    return orig if isinstance(orig, BaseException) else error
